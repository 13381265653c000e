"""Ingestion: raw corpora from the inbox, one partition per batch."""


from dagster import (
    AssetExecutionContext,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
)

from assets.checks import ledger_check, non_empty_check, suite_check
from assets.metadata import ledger_metadata
from assets.partitions import ingestion_batches
from resources.ingestion.inbox import Inbox
from resources.quality import document_expectations
from resources.records import DOCUMENT_COLUMNS, QUARANTINE_COLUMNS, fingerprint, frame
from resources.storage import ArtifactStore, write_json, write_table


@asset(
    partitions_def=ingestion_batches,
    group_name="ingestion",
    kinds={"python", "parquet"},
    code_version="1",
)
def raw_documents(context: AssetExecutionContext, inbox: Inbox, store: ArtifactStore) -> MaterializeResult:
    """Every record of one inbox batch in the document schema, with its source file, sha256 and line;
    records that cannot be read are quarantined with the reason, and the rest of the batch goes on."""
    batch = context.partition_key
    read = inbox.read(batch)
    documents = frame(read.documents, DOCUMENT_COLUMNS)
    quarantine = frame(read.quarantine, QUARANTINE_COLUMNS)
    ledger = read.ledger()
    for row in read.quarantine:
        context.log.warning(f"quarantined ({row['reason']}): {row['detail']}")

    with store.writing("raw_documents", batch) as out:
        write_table(out, "documents.parquet", documents)
        write_table(out, "quarantine.parquet", quarantine)
        write_json(out, "files.json", read.files)
        write_json(out, "forgotten.json", read.forgotten)  # doc ids dropped by the forget list (ids only)
        write_json(out, "ledger.json", ledger.to_dict())

    files = "\n".join(f"| {f['path']} | {f['sha256'][:16]} | {f['bytes']} | {f['records']} | {f['quarantined']} |" for f in read.files)
    return MaterializeResult(
        metadata={
            **ledger_metadata(ledger, store.partition_dir("raw_documents", batch)),
            "files": MetadataValue.md("| file | sha256 | bytes | records | quarantined |\n|---|---|---|---|---|\n" + files),
            "source_files": MetadataValue.json([{k: f[k] for k in ("path", "sha256", "bytes", "records")} for f in read.files]),
            "kinds": MetadataValue.json(documents["kind"].value_counts().to_dict()),
        },
        data_version=DataVersion(fingerprint(documents, ["doc_id", "text", "messages"])),
    )


raw_documents_expectations = suite_check(
    raw_documents, document_expectations, "documents.parquet",
    "Schema, unique doc_id, text length bounds and known kinds (great-expectations).",
)
raw_documents_ledger = ledger_check(raw_documents, upstream=None)
raw_documents_not_empty = non_empty_check(raw_documents)
