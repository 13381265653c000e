"""Retrieval: the knowledge index over redacted documents, used to ground answers."""

import numpy as np
from dagster import AssetExecutionContext, AutomationCondition, DataVersion, MaterializeResult, MetadataValue, asset

from assets.datasets import all_redacted, golden_dataset
from assets.curation import redacted_documents
from resources.records import fingerprint, sha256_hex
from resources.retrieval.index import KnowledgeIndexer, recall_at_k
from resources.storage import ArtifactStore, write_json, write_table

KS = (1, 3, 5)


@asset(
    deps=[redacted_documents, golden_dataset],
    group_name="retrieval",
    kinds={"numpy", "parquet"},
    code_version="1",
    automation_condition=AutomationCondition.eager(),
)
def knowledge_index(context: AssetExecutionContext, indexer: KnowledgeIndexer, store: ArtifactStore) -> MaterializeResult:
    """Sentence embeddings of every redacted document (all-MiniLM-L6-v2, offline), with retrieval
    quality measured as recall@k of each golden question's known source document."""
    docs = all_redacted(context, store)[["doc_id", "external_id", "title", "text"]].reset_index(drop=True)
    version = sha256_hex(fingerprint(docs, ["doc_id", "text"]) + indexer.model)[:24]
    index = indexer.build(list(docs["doc_id"]), list(docs["text"]))

    golden = store.read_table("golden_dataset", store.latest("golden_dataset"), "examples.parquet")
    known = golden[golden["source_doc_id"].notna()]
    hits = index.search(indexer.embed(list(known["prompt"])), max(KS)) if len(known) else []
    by_doc = dict(zip(docs["doc_id"], docs["external_id"]))
    retrieved = [[by_doc[doc_id] for doc_id, _ in row] for row in hits]
    recall = recall_at_k(retrieved, list(known["source_doc_id"]), KS)

    with store.writing("knowledge_index", version) as out:
        np.save(out / "vectors.npy", index.vectors)
        write_table(out, "documents.parquet", docs)
        write_json(out, "index.json", {"model": indexer.model, "dim": int(index.vectors.shape[1]), "documents": len(docs),
                                       "recall": recall, "golden_questions_with_source": len(known)})
    store.set_latest("knowledge_index", version)
    context.log.info("retrieval " + ", ".join(f"{k}={v:.3f}" for k, v in recall.items()))
    return MaterializeResult(
        metadata={
            "documents": MetadataValue.int(len(docs)),
            "dimensions": MetadataValue.int(int(index.vectors.shape[1])),
            "embedding_model": MetadataValue.text(indexer.model),
            "golden_questions_with_source": MetadataValue.int(len(known)),
            **{k.replace("@", "_at_"): MetadataValue.float(v) for k, v in recall.items()},
            "path": MetadataValue.path(str(store.partition_dir("knowledge_index", version))),
        },
        data_version=DataVersion(version),
    )
