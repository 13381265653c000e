"""Jobs: what one run of a model materializes. Every model gets the same jobs, named `<model>_<job>`."""

from __future__ import annotations

from dagster import AssetKey, AssetSelection, define_asset_job

from assets.partitions import batch_partitions, serving_days
from resources.spec import ModelSpec

# What a model's build_datasets job materializes (and its datasets automation watches).
DATA_ASSETS = ("human_feedback", "corpus", "document_chunks", "knowledge_index", "knowledge_examples", "golden_dataset",
               "instruction_dataset", "dataset_card")


def _keys(spec: ModelSpec, *assets: str) -> AssetSelection:
    return AssetSelection.assets(*(AssetKey([spec.name, a]) for a in assets))


def model_jobs(spec: ModelSpec) -> dict:
    """job kind (ingest_batch, build_datasets, ...) -> the model's job."""
    name = spec.name
    training = ("base_model", "lora_adapter", *(("merged_model",) if spec.serving.serve_merged else ()))
    evaluation = ("eval_report", "safety_report", "promotion_decision")
    deployment = ("deployed_endpoint", "governance_audit")
    return {
        # One ingestion batch through the data-governance stages (with their checks).
        "ingest_batch": define_asset_job(
            f"{name}_ingest_batch", selection=_keys(spec, "raw_documents", "cleaned_documents", "redacted_documents"),
            partitions_def=batch_partitions(name), description=f"{name}: read, clean, de-duplicate and redact one inbox batch."),
        # The corpus and the datasets built from it.
        "build_datasets": define_asset_job(
            f"{name}_build_datasets", selection=_keys(spec, *DATA_ASSETS),
            description=f"{name}: rebuild the corpus (batches de-duplicated against each other), its passages, the "
            "knowledge index, the examples made from sections, the golden set (with reviewer feedback), the "
            "instruction dataset and its card."),
        # Fine-tuning (config: the model's training block, editable in the launchpad).
        "train_adapter": define_asset_job(
            f"{name}_train_adapter", selection=_keys(spec, *training),
            description=f"{name}: resolve the base model and fine-tune an adapter on the instruction dataset."),
        # Golden-set scores, safety probes and the promotion decision (its blocking check: the gate).
        "evaluate_adapter": define_asset_job(
            f"{name}_evaluate_adapter", selection=_keys(spec, *evaluation),
            description=f"{name}: score base, candidate and champion on the golden set, probe safety, decide promotion."),
        # Serve the promoted adapter (set ops.<name>__deployed_endpoint.config.adapter_version to roll back).
        "deploy_adapter": define_asset_job(
            f"{name}_deploy_adapter", selection=_keys(spec, *deployment),
            description=f"{name}: serve the adapter the promotion decision passed, behind the gateway; audit its lineage."),
        # Retraining: adapter -> evaluation -> decision [gate] -> deployment -> audit, in one run.
        "retrain": define_asset_job(
            f"{name}_retrain", selection=_keys(spec, *training, *evaluation, *deployment),
            description=f"{name}: fine-tune on the dataset, evaluate, and deploy only if the promotion gate passes."),
        # Daily monitoring: the day's traffic, then drift against the training data.
        "monitor": define_asset_job(
            f"{name}_monitor", selection=_keys(spec, "serving_traffic", "drift_report"), partitions_def=serving_days,
            description=f"{name}: summarise a day of serving traffic and re-measure drift and feedback."),
        # Weekly: the champion re-scored on the current golden set.
        "evaluate_champion": define_asset_job(
            f"{name}_evaluate_champion", selection=_keys(spec, "champion_scores"),
            description=f"{name}: re-score the adapter in service on the golden set (quality drift)."),
    }
