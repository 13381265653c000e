"""Governance: the lineage audit of what is deployed, from the Dagster instance's own event log."""

import json

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.deployment import deployed_endpoint
from resources.governance.lineage import LineageReader, source_files, to_markdown, to_openlineage
from resources.storage import ArtifactStore, write_json


class AuditConfig(Config):
    endpoint: str = Field(default="support", description="Served model name whose lineage is audited.")


@asset(deps=[deployed_endpoint], group_name="governance", kinds={"markdown", "json"}, code_version="1")
def governance_audit(context: AssetExecutionContext, config: AuditConfig, store: ArtifactStore) -> MaterializeResult:
    """For the deployed endpoint: the adapter, its config and manifest, the dataset version, every data
    batch with its redaction policy, audit counts and raw files (sha256, ingestion time), the base model,
    the evaluation scores and the gate decision, and what triggered each run."""
    report = LineageReader(context.instance).report(endpoint=config.endpoint)
    markdown = to_markdown(report)
    version = report["adapter"]["data_version"]
    with store.writing("governance_audit", version) as out:
        (out / "lineage.md").write_text(markdown)
        write_json(out, "lineage.json", report)
        write_json(out, "openlineage.json", to_openlineage(report))
    store.set_latest("governance_audit", version)
    files = source_files(report)
    return MaterializeResult(metadata={
        "report": MetadataValue.md(markdown),
        "endpoint": MetadataValue.text(config.endpoint),
        "adapter_version": MetadataValue.text(version),
        "source_files": MetadataValue.int(len(files)),
        "raw_file_sha256": MetadataValue.json(sorted({f["sha256"] for f in files})),
        "gate_decision": MetadataValue.text((report.get("promotion_gate") or {}).get("decision") or "none recorded"),
        "path": MetadataValue.path(str(store.partition_dir("governance_audit", version))),
    })
