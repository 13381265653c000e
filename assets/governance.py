"""Governance: the lineage audit of what a model has in service, from the Dagster instance's own event log."""

from dagster import AssetExecutionContext, AssetIn, MetadataValue, Output, asset

from assets.metadata import asset_args, emit, key
from resources.artifacts import Artifact, version_of
from resources.governance.lineage import LineageReader, source_files, to_markdown, to_openlineage
from resources.spec import ModelSpec
from resources.storage import ArtifactStore, write_json


def build(spec: ModelSpec) -> list:
    @asset(key=key(spec, "governance_audit"), kinds={"markdown", "json"}, code_version="2",
           ins={"deployed_endpoint": AssetIn(key=key(spec, "deployed_endpoint"))}, **asset_args(spec, "governance"))
    def governance_audit(context: AssetExecutionContext, store: ArtifactStore, deployed_endpoint: Artifact) -> Output[Artifact]:
        """For the deployment this run made (or the latest one): the adapter, its config and manifest, the dataset
        version, every data batch with its redaction policy, audit counts and raw files (sha256, ingestion time),
        the base model, the evaluation scores and the promotion decision, and what triggered each run."""
        report = LineageReader(context.instance).report(model=spec.name, endpoint_storage_id=deployed_endpoint.storage_id)
        markdown = to_markdown(report)
        version = version_of(markdown.split("\n", 3)[-1], {"deployed_endpoint": deployed_endpoint.version})
        artifact = Artifact.create(store, context.asset_key, version)
        with artifact.writing() as out:
            (out / "lineage.md").write_text(markdown)
            write_json(out, "lineage.json", report)
            write_json(out, "openlineage.json", to_openlineage(report))
        files = source_files(report)
        return emit(artifact, {
            "report": MetadataValue.md(markdown),
            "model": MetadataValue.text(spec.name),
            "adapter_version": MetadataValue.text(report["adapter"]["data_version"]),
            "source_files": MetadataValue.int(len(files)),
            "raw_file_sha256": MetadataValue.json(sorted({f["sha256"] for f in files})),
            "gate_decision": MetadataValue.text((report.get("promotion_decision") or {}).get("metadata", {}).get("decision")
                                                or "none recorded"),
        })

    return [governance_audit]
