"""Curation: cleaned and de-duplicated documents, then PII-redacted documents, per batch."""


import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from assets.checks import ledger_check, suite_check
from assets.ingestion import raw_documents
from assets.metadata import ledger_metadata, reason_table
from assets.partitions import ingestion_batches
from resources.curation.curator import CURATED_EXTRA_COLUMNS, TextCurator
from resources.quality import document_expectations
from resources.records import DOCUMENT_COLUMNS, DROPPED_COLUMNS, fingerprint, frame, rows
from resources.redaction.redactor import PiiRedactor
from resources.storage import ArtifactStore, write_json, write_table

REDACTED_COLUMNS = [*DOCUMENT_COLUMNS, "pii_found"]


def kept_in_other_batches(context: AssetExecutionContext, store: ArtifactStore) -> list[dict]:
    """Dedup keys and MinHash signatures of documents already kept in every other batch."""
    batches = [
        b for b in context.instance.get_dynamic_partitions(ingestion_batches.name)
        if b != context.partition_key and store.exists("cleaned_documents", b, "documents.parquet")
    ]
    tables = [store.read_table("cleaned_documents", b)[["doc_id", *CURATED_EXTRA_COLUMNS]] for b in batches]
    return rows(pd.concat(tables)) if tables else []


@asset(
    partitions_def=ingestion_batches,
    deps=[raw_documents],
    group_name="curation",
    kinds={"python", "parquet"},
    code_version="1",
    pool="dedup_index",  # batches de-duplicate against each other: one at a time
)
def cleaned_documents(context: AssetExecutionContext, curator: TextCurator, store: ArtifactStore) -> MaterializeResult:
    """The batch's documents normalised and filtered for quality and language, with exact and near
    duplicates removed, against this batch and every batch kept before it; each drop has its reason."""
    batch = context.partition_key
    raw = store.read_table("raw_documents", batch)
    result = curator.curate(rows(raw), kept_in_other_batches(context, store))
    documents = frame(result.kept, [*DOCUMENT_COLUMNS, *CURATED_EXTRA_COLUMNS])
    dropped = frame(result.dropped, DROPPED_COLUMNS)

    with store.writing("cleaned_documents", batch) as out:
        write_table(out, "documents.parquet", documents)
        write_table(out, "dropped.parquet", dropped)
        write_json(out, "ledger.json", result.ledger.to_dict())

    return MaterializeResult(
        metadata=ledger_metadata(result.ledger, store.partition_dir("cleaned_documents", batch)),
        data_version=DataVersion(fingerprint(documents, ["doc_id", "text", "messages"])),
    )


@asset(
    partitions_def=ingestion_batches,
    deps=[cleaned_documents],
    group_name="curation",
    kinds={"presidio", "parquet"},
    code_version="1",
)
def redacted_documents(context: AssetExecutionContext, redactor: PiiRedactor, store: ArtifactStore) -> MaterializeResult:
    """The batch's cleaned documents with every PII finding replaced under the versioned redaction
    policy, and an audit of how many of each entity type were replaced (never the values)."""
    batch = context.partition_key
    cleaned = store.read_table("cleaned_documents", batch)
    policy = redactor.policy()
    result = redactor.redact_documents(rows(cleaned[DOCUMENT_COLUMNS]))
    documents = frame(result.documents, REDACTED_COLUMNS)
    audit = {"policy": policy.ref, "entities": dict(sorted(result.audit.items())), "documents_with_pii": int((documents["pii_found"] > 0).sum())}

    with store.writing("redacted_documents", batch) as out:
        write_table(out, "documents.parquet", documents)
        write_json(out, "audit.json", audit)
        write_json(out, "ledger.json", result.ledger.to_dict())

    return MaterializeResult(
        metadata={
            **ledger_metadata(result.ledger, store.partition_dir("redacted_documents", batch)),
            "redaction_policy": MetadataValue.text(policy.ref),
            "redactions_by_entity": reason_table(result.audit, header="entity"),
            "redactions_total": MetadataValue.int(sum(result.audit.values())),
            "documents_with_pii": MetadataValue.int(audit["documents_with_pii"]),
        },
        data_version=DataVersion(fingerprint(documents, ["doc_id", "text", "messages"]) + "-" + policy.content_hash()[:8]),
    )


@asset_check(
    asset=redacted_documents,
    partitions_def=ingestion_batches,
    blocking=True,
    description="A second Presidio scan of the redacted text finds no PII above the policy thresholds.",
)
def no_residual_pii(context, redactor: PiiRedactor, store: ArtifactStore) -> AssetCheckResult:
    documents = store.read_table("redacted_documents", context.partition_key)
    residual = redactor.residual_findings(list(documents["text"]))
    return AssetCheckResult(
        passed=not residual,
        metadata={
            "documents_scanned": MetadataValue.int(len(documents)),
            "residual_findings": MetadataValue.int(sum(residual.values())),
            "residual_by_entity": reason_table(residual, header="entity"),
        },
    )


cleaned_documents_expectations = suite_check(
    cleaned_documents, document_expectations, "documents.parquet",
    "Schema, unique doc_id, text length bounds after cleaning (great-expectations).",
)
cleaned_documents_ledger = ledger_check(cleaned_documents, upstream="raw_documents")
redacted_documents_expectations = suite_check(
    redacted_documents, document_expectations, "documents.parquet",
    "Schema, unique doc_id and text length bounds after redaction (great-expectations).",
)
redacted_documents_ledger = ledger_check(redacted_documents, upstream="cleaned_documents")
