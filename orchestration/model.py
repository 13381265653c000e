"""One model's definitions: its assets and checks, jobs, sensors and schedules; and the Dagster component that
declares a model in YAML (`models/<name>/defs.yaml`)."""

from __future__ import annotations

import dagster as dg
from dagster import AssetKey, Definitions

from assets.graph import model_assets
from orchestration.jobs import model_jobs
from orchestration.schedules import model_schedules
from orchestration.sensors import blocking_checks, datasets_automation_for, inbox_sensor_for, retraining_sensor_for
from resources.spec import ModelSpec

SPEC_METADATA = "tuneforge/model/"  # Definitions metadata: the model's resolved spec, by name


def model_definitions(spec: ModelSpec) -> Definitions:
    """Everything of one model, every key under its name: `support/raw_documents`, job `support_retrain`, ..."""
    assets = model_assets(spec)
    jobs = model_jobs(spec)
    gates = {AssetKey([spec.name, a]): blocking_checks(assets, AssetKey([spec.name, a]))
             for a in ("instruction_dataset", "golden_dataset", "corpus")}
    return Definitions(
        assets=[a for a in assets if not isinstance(a, dg.AssetChecksDefinition)],
        asset_checks=[a for a in assets if isinstance(a, dg.AssetChecksDefinition)],
        jobs=list(jobs.values()),
        sensors=[inbox_sensor_for(spec, jobs["ingest_batch"]), datasets_automation_for(spec),
                 retraining_sensor_for(spec, jobs["retrain"], gates)],
        schedules=model_schedules(spec, jobs),
        metadata={SPEC_METADATA + spec.name: dg.MetadataValue.json(spec.model_dump(mode="json"))},
    )


class TuneforgeModel(dg.Component, dg.Resolvable, ModelSpec):
    """A tuneforge model declared in YAML: one folder per model under the project's `models/`, its `defs.yaml`

        type: orchestration.model.TuneforgeModel
        attributes:
          name: support
          inbox: data/inbox/support
          golden: [data/sample/support/golden.jsonl]
          training: {method: lora, lora_r: 16, num_train_epochs: 2}

    Every attribute is a `ModelSpec` field (documented there); paths are relative to the project folder."""

    def build_defs(self, context: dg.ComponentLoadContext) -> Definitions:
        return model_definitions(self.spec(context.project_root))

    def spec(self, project_root) -> ModelSpec:
        return ModelSpec.model_validate(self.model_dump()).resolved(project_root)
