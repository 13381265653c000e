"""The lineage audit: from a model's deployed endpoint (or an adapter) back to the raw files, read from the
Dagster instance's own event log — materializations, their metadata, data versions, the input each step
loaded (the `dagster/input_event_pointer/*` tags and, for partitioned inputs, the `inputs` metadata the
artifact IO manager records per partition), asset-check evaluations and run tags — not from a side database.

Chain: endpoint -> promotion decision -> evaluation and safety report; endpoint -> adapter (config, manifest,
code) -> base model (name, weights sha256) and instruction dataset -> golden set and corpus -> each batch's
redacted / cleaned / raw documents (redaction policy, audit counts, files with sha256 and ingestion time);
with the run and trigger (sensor, schedule, automation, launched by hand) of every step.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from dagster import AssetCheckKey, AssetKey, AssetRecordsFilter, DagsterInstance

POINTER = "dagster/input_event_pointer/"
INPUT_VERSION = "dagster/input_data_version/"


class LineageError(LookupError):
    """The thing asked about is not in the instance's event log."""


def _value(v: Any) -> Any:
    value = getattr(v, "value", v)
    if hasattr(value, "md_str"):
        return value.md_str
    if hasattr(value, "path"):
        return value.path
    if hasattr(value, "url"):
        return value.url
    return value


class LineageReader:
    def __init__(self, instance: DagsterInstance):
        self.instance = instance

    # -- event log lookups ---------------------------------------------------------------------
    def _key(self, model: str, asset: str) -> AssetKey:
        return AssetKey([model, asset])

    def _records(self, key: AssetKey, limit: int = 200):
        return self.instance.fetch_materializations(AssetRecordsFilter(asset_key=key), limit=limit).records

    def _by_storage_id(self, key: AssetKey, storage_id: int):
        flt = AssetRecordsFilter(asset_key=key, storage_ids=[storage_id])
        return next(iter(self.instance.fetch_materializations(flt, limit=1).records), None)

    def _by_data_version(self, key: AssetKey, version: str):
        return next((r for r in self._records(key) if r.event_log_entry.asset_materialization.tags.get("dagster/data_version") == version), None)

    def _trigger(self, run_id: str) -> dict:
        run = self.instance.get_run_by_id(run_id)
        tags = run.tags if run else {}
        if "dagster/sensor_name" in tags:
            how = f"sensor {tags['dagster/sensor_name']}" + (f" (run key {tags['dagster/run_key']})" if "dagster/run_key" in tags else "")
        elif "dagster/schedule_name" in tags:
            how = f"schedule {tags['dagster/schedule_name']}"
        elif tags.get("dagster/from_automation_condition") or "dagster/automation_condition_evaluation_id" in tags:
            how = "automation condition"
        else:
            how = "launched by " + tags.get("dagster/user", tags.get("user", "hand (UI, CLI or API)"))
        return {"run_id": run_id, "job": run.job_name if run else None, "triggered_by": how,
                **({"trigger": tags["tuneforge/trigger"]} if "tuneforge/trigger" in tags else {})}

    def _node(self, record) -> dict:
        m = record.event_log_entry.asset_materialization
        metadata = {k: _value(v) for k, v in m.metadata.items()}
        return {
            "asset": m.asset_key.to_user_string(), "partition": m.partition,
            "data_version": m.tags.get("dagster/data_version"), "code_version": m.tags.get("dagster/code_version"),
            "materialized_at": dt.datetime.fromtimestamp(record.timestamp, dt.timezone.utc).isoformat(timespec="seconds"),
            "storage_id": record.storage_id, **self._trigger(record.run_id),
            "metadata": {k: v for k, v in metadata.items() if not k.endswith("_chart")},
            "inputs": {k.removeprefix(INPUT_VERSION): v for k, v in m.tags.items() if k.startswith(INPUT_VERSION)},
            "_pointers": {k.removeprefix(POINTER): int(v) for k, v in m.tags.items() if k.startswith(POINTER) and v.isdigit()},
            "_loaded": metadata.get("inputs") or {},
        }

    def _upstream(self, node: dict | None, key: AssetKey) -> dict | None:
        """The materialization `node` loaded for `key` (an unpartitioned input)."""
        if node is None:
            return None
        pointer = node["_pointers"].get(key.to_user_string())
        record = self._by_storage_id(key, pointer) if pointer else None
        return self._node(record) if record else None

    def _partitions(self, node: dict | None, key: AssetKey) -> dict[str, dict]:
        """The materialization of each partition `node` loaded for a partitioned input."""
        if node is None:
            return {}
        loaded = (node["_loaded"].get(key.to_user_string()) or {}).get("partitions") or {}
        out = {}
        for partition, info in loaded.items():
            record = self._by_storage_id(key, info["storage_id"]) if info.get("storage_id") else None
            if record is not None:
                out[partition] = self._node(record)
        return out

    def _check(self, key: AssetKey, name: str, storage_id: int) -> dict | None:
        """The evaluation of check `name` against exactly the materialization `storage_id`."""
        history = self.instance.event_log_storage.get_asset_check_execution_history(AssetCheckKey(key, name), limit=50)
        for record in history:
            evaluation = record.evaluation
            target = getattr(evaluation, "target_materialization_data", None) if evaluation is not None else None
            if target is not None and target.storage_id == storage_id:
                metadata = {k: _value(v) for k, v in (evaluation.metadata or {}).items()}
                return {"passed": evaluation.passed, "metadata": metadata,
                        "evaluated_at": dt.datetime.fromtimestamp(record.create_timestamp, dt.timezone.utc).isoformat(timespec="seconds"),
                        **self._trigger(record.run_id)}
        return None

    # -- the report ------------------------------------------------------------------------------
    def endpoint(self, model: str, storage_id: int | None = None) -> dict:
        key = self._key(model, "deployed_endpoint")
        record = self._by_storage_id(key, storage_id) if storage_id else next(iter(self._records(key, limit=1)), None)
        if record is None:
            raise LineageError(f"model {model!r} has no deployed_endpoint materialization in this Dagster instance")
        return self._node(record)

    def report(self, model: str, endpoint_storage_id: int | None = None, adapter_version: str | None = None) -> dict:
        """The chain for the model's deployment (the latest, or the one at `endpoint_storage_id`), or for one of
        its adapter versions."""
        out: dict[str, Any] = {"generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "model": model}
        endpoint = None
        if adapter_version is None:
            endpoint = out["endpoint"] = self.endpoint(model, endpoint_storage_id)
            adapter_version = endpoint["metadata"]["adapter_version"]
        adapter_key = self._key(model, "lora_adapter")
        loaded = self._upstream(endpoint, adapter_key)
        adapter = loaded if loaded and loaded["data_version"] == adapter_version else None
        if adapter is None:  # a rollback serves another adapter than the run's: look it up by version
            record = self._by_data_version(adapter_key, adapter_version)
            if record is None:
                raise LineageError(f"no {adapter_key.to_user_string()} materialization with version {adapter_version!r}")
            adapter = self._node(record)
        out["adapter"] = adapter
        out["base_model"] = self._upstream(adapter, self._key(model, "base_model"))
        dataset = out["dataset"] = self._upstream(adapter, self._key(model, "instruction_dataset"))
        out["golden_dataset"] = self._upstream(dataset, self._key(model, "golden_dataset"))
        corpus = out["corpus"] = self._upstream(dataset, self._key(model, "corpus"))
        out["batches"] = []
        for batch, redacted in sorted(self._partitions(corpus, self._key(model, "redacted_documents")).items()):
            cleaned = self._upstream(redacted, self._key(model, "cleaned_documents"))
            raw = self._upstream(cleaned, self._key(model, "raw_documents"))
            out["batches"].append({"batch": batch, "redacted_documents": redacted, "cleaned_documents": cleaned,
                                   "raw_documents": raw})
        decision = self._upstream(endpoint, self._key(model, "promotion_decision"))
        if decision is None or decision["metadata"].get("adapter_version") != adapter_version:
            decision = next((self._node(r) for r in self._records(self._key(model, "promotion_decision"))
                             if _value(r.event_log_entry.asset_materialization.metadata.get("adapter_version")) == adapter_version), None)
        out["promotion_decision"] = decision
        out["promotion_gate"] = self._check(self._key(model, "promotion_decision"), "promotion_gate", decision["storage_id"]) \
            if decision else None
        out["evaluation"] = self._upstream(decision, self._key(model, "eval_report"))
        out["safety"] = self._upstream(decision, self._key(model, "safety_report"))
        return _strip(out)


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def source_files(report: dict) -> list[dict]:
    """Every raw file the report reaches: batch, path, sha256, ingestion time."""
    files = []
    for chain in report.get("batches", []):
        raw = chain.get("raw_documents")
        if raw:
            for f in raw["metadata"].get("source_files") or []:
                files.append({"batch": chain["batch"], **f, "ingested_at": raw["materialized_at"]})
    return files


def to_markdown(report: dict) -> str:
    """The report as a governance reviewer reads it."""
    lines = ["# Lineage audit", "", f"Model `{report['model']}`, generated {report['generated_at']} from the Dagster event log.", ""]

    def step(title: str, node: dict | None, keys: tuple[str, ...]) -> None:
        lines.append(f"## {title}")
        if not node:
            lines.extend(["not found in the event log", ""])
            return
        lines.append(f"- version `{node['data_version']}`, code version `{node['code_version']}`, materialized "
                     f"{node['materialized_at']}, run `{node['run_id']}` ({node['job']}), triggered by {node['triggered_by']}")
        for key in keys:
            if key in node["metadata"]:
                value = node["metadata"][key]
                lines.append(f"- {key}: {value if not isinstance(value, (dict, list)) else json.dumps(value)}")
        lines.append("")

    if "endpoint" in report:
        step(f"Endpoint `{report['endpoint']['metadata'].get('served_model')}`", report["endpoint"],
             ("url", "adapter_version", "vllm_model", "deployed_at", "previous_champion", "rollback"))
    step("Adapter", report["adapter"], ("method", "dataset_version", "base_model_sha256", "steps", "final_eval_loss",
                                        "base_eval_loss", "precision", "path"))
    step("Base model", report["base_model"], ("model", "weights_sha256", "parameters", "dtype", "eos_token"))
    step("Instruction dataset", report["dataset"], ("train_examples", "validation_examples", "records_in", "records_kept",
                                                    "text_strategy", "path"))
    step("Golden dataset", report["golden_dataset"], ("examples", "reviewer_corrections", "redaction_policy", "path"))
    step("Corpus", report.get("corpus"), ("batches", "records_in", "records_kept", "excluded_batches"))
    lines.append("## Data batches")
    lines.append("| batch | redacted version | redaction policy | redactions | raw files (sha256) | ingested | trigger |")
    lines.append("|---|---|---|---|---|---|---|")
    for chain in report["batches"]:
        red, raw = chain.get("redacted_documents") or {}, chain.get("raw_documents") or {}
        files = ", ".join(f"{f['path']} ({f['sha256']})" for f in (raw.get("metadata", {}).get("source_files") or []))
        lines.append(f"| {chain['batch']} | {red.get('data_version', '—')} | {red.get('metadata', {}).get('redaction_policy', '—')} "
                     f"| {red.get('metadata', {}).get('redactions_total', '—')} | {files or '—'} | {raw.get('materialized_at', '—')} "
                     f"| {raw.get('triggered_by', '—')} |")
    lines.append("")
    evaluation = report.get("evaluation")
    if evaluation:
        step("Evaluation", evaluation, ("comparison", "champion", "judge_metrics"))
    step("Safety report", report.get("safety"), ("pii_leaks", "canary_leaks", "toxic_outputs", "jailbreak_disclosures", "runaway_rate"))
    decision = report.get("promotion_decision")
    gate = report.get("promotion_gate")
    lines.append("## Promotion decision")
    if decision:
        lines.append(f"- decision: **{decision['metadata'].get('decision')}** (version `{decision['data_version']}`, run "
                     f"`{decision['run_id']}`); blocking check promotion_gate: "
                     + (f"{'passed' if gate['passed'] else 'failed'} at {gate['evaluated_at']}" if gate else "not evaluated"))
        lines.append(str(decision["metadata"].get("reasons") or ""))
    else:
        lines.append("no promotion decision recorded for this adapter")
    return "\n".join(lines) + "\n"


def to_openlineage(report: dict, namespace: str = "tuneforge") -> list[dict]:
    """The chain as OpenLineage RunEvents (COMPLETE), one per materialization, oldest first."""
    def dataset(node: dict) -> dict:
        name = node["asset"] + (f"[{node['partition']}]" if node.get("partition") else "")
        return {"namespace": namespace, "name": name,
                "facets": {"version": {"_producer": "tuneforge", "_schemaURL": "https://openlineage.io/spec/facets/1-0-1/DatasetVersionDatasetFacet.json",
                                       "datasetVersion": node["data_version"]}}}

    chain: list[tuple[dict, list[dict]]] = []
    for batch in report.get("batches", []):
        raw, cleaned, redacted = (batch.get(a) for a in ("raw_documents", "cleaned_documents", "redacted_documents"))
        chain += [(n, [u] if u else []) for n, u in ((raw, None), (cleaned, raw), (redacted, cleaned)) if n]
    corpus, dataset_node = report.get("corpus"), report.get("dataset")
    if corpus:
        chain.append((corpus, [b["redacted_documents"] for b in report.get("batches", []) if b.get("redacted_documents")]))
    if dataset_node:
        chain.append((dataset_node, [n for n in (corpus, report.get("golden_dataset")) if n]))
    adapter = report["adapter"]
    chain.append((adapter, [n for n in (dataset_node, report.get("base_model")) if n]))
    for node, inputs in ((report.get("evaluation"), [adapter]), (report.get("safety"), [adapter]),
                         (report.get("promotion_decision"), [n for n in (report.get("evaluation"), report.get("safety")) if n])):
        if node:
            chain.append((node, inputs))
    if report.get("endpoint"):
        chain.append((report["endpoint"], [n for n in (adapter, report.get("promotion_decision")) if n]))
    return [{
        "eventType": "COMPLETE", "eventTime": node["materialized_at"], "producer": "https://github.com/tuneforge/tuneforge",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": {"runId": node["run_id"]}, "job": {"namespace": namespace, "name": node["asset"]},
        "inputs": [dataset(u) for u in inputs], "outputs": [dataset(node)],
    } for node, inputs in sorted(chain, key=lambda item: item[0]["materialized_at"])]
