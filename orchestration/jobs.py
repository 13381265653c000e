"""Jobs: what one run materializes."""

from dagster import AssetSelection, define_asset_job

from assets.curation import cleaned_documents, redacted_documents
from assets.deployment import deployed_endpoint
from assets.governance import governance_audit
from assets.datasets import dataset_card, golden_dataset, instruction_dataset
from assets.feedback import human_feedback
from assets.retrieval import knowledge_index
from assets.ingestion import raw_documents
from assets.monitoring import champion_scores, drift_report, serving_traffic
from assets.partitions import ingestion_batches, serving_days
from assets.evaluation import eval_report, safety_report
from assets.training import base_model, lora_adapter, merged_model

# One ingestion batch through the data-governance stages (with their checks).
ingest_batch_job = define_asset_job(
    "ingest_batch",
    selection=AssetSelection.assets(raw_documents, cleaned_documents, redacted_documents),
    partitions_def=ingestion_batches,
    description="Read, clean, de-duplicate and redact one inbox batch.",
)

# The datasets built from every redacted batch.
build_datasets_job = define_asset_job(
    "build_datasets",
    selection=AssetSelection.assets(human_feedback, golden_dataset, instruction_dataset, dataset_card, knowledge_index),
    description="Rebuild the golden set (with reviewer feedback), the instruction dataset, its card and the knowledge index.",
)

# Fine-tuning on the latest instruction dataset (config: FineTuneConfig on lora_adapter).
train_adapter_job = define_asset_job(
    "train_adapter",
    selection=AssetSelection.assets(base_model, lora_adapter, merged_model),
    description="Resolve the base model, fine-tune an adapter on the instruction dataset, merge it.",
)

# Golden-set scores, safety probes and the promotion gate for the latest adapter.
evaluate_adapter_job = define_asset_job(
    "evaluate_adapter",
    selection=AssetSelection.assets(eval_report, safety_report),
    description="Score base model and candidate adapter on the golden set, probe safety, decide promotion.",
)

# Put the promoted adapter into service (vLLM multi-LoRA behind the gateway). Config: DeploymentConfig;
# set ops.deployed_endpoint.config.adapter_version to a previous version to roll back.
deploy_adapter_job = define_asset_job(
    "deploy_adapter",
    selection=AssetSelection.assets(deployed_endpoint, governance_audit),
    description="Serve the adapter the promotion gate passed on vLLM, behind the guardrail gateway; audit its lineage.",
)

# The retraining path after the data stages: adapter -> evaluation -> gate -> deployment -> audit. The
# blocking promotion_gate stops the run before deployed_endpoint when the candidate is not better.
retrain_job = define_asset_job(
    "retrain",
    selection=AssetSelection.assets(base_model, lora_adapter, eval_report, safety_report, deployed_endpoint, governance_audit),
    description="Fine-tune on the current dataset, evaluate, and deploy only if the promotion gate passes.",
)

# Daily monitoring: yesterday's traffic, then drift against the training data.
monitor_job = define_asset_job(
    "monitor",
    selection=AssetSelection.assets(serving_traffic, drift_report),
    partitions_def=serving_days,
    description="Summarise a day of serving traffic and re-measure drift and feedback.",
)

# Weekly: the deployed champion re-scored on the current golden set.
evaluate_champion_job = define_asset_job(
    "evaluate_champion",
    selection=AssetSelection.assets(champion_scores),
    description="Re-score the deployed adapter on the golden set (quality drift).",
)
