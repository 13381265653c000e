"""Retrieval: a model's knowledge index over its passages (document chunks), used to ground answers."""

import numpy as np
from dagster import AssetExecutionContext, AssetIn, AutomationCondition, MetadataValue, Output, asset

from assets.metadata import asset_args, emit, key
from resources.artifacts import Artifact, version_of
from resources.records import fingerprint
from resources.retrieval.index import PASSAGE_COLUMNS, KnowledgeIndexer, recall_at_k
from resources.spec import ModelSpec
from resources.storage import ArtifactStore, write_json, write_table

KS = (1, 3, 5)


def build(spec: ModelSpec) -> list:
    @asset(key=key(spec, "knowledge_index"), kinds={"numpy", "parquet"}, code_version="3",
           ins={"document_chunks": AssetIn(key=key(spec, "document_chunks")),
                "golden_dataset": AssetIn(key=key(spec, "golden_dataset"))},
           automation_condition=AutomationCondition.eager(), **asset_args(spec, "retrieval"))
    def knowledge_index(context: AssetExecutionContext, indexer: KnowledgeIndexer, store: ArtifactStore,
                        document_chunks: Artifact, golden_dataset: Artifact) -> Output[Artifact]:
        """Sentence embeddings of every passage (document chunk) of the model's corpus (all-MiniLM-L6-v2,
        offline), with retrieval quality measured as recall@k of each golden question's known source document
        (a hit: a passage of that document among the first k)."""
        passages = document_chunks.read_table("chunks.parquet")[PASSAGE_COLUMNS].reset_index(drop=True)
        index = indexer.build(list(passages["chunk_id"]), list(passages["text"]))
        golden = golden_dataset.read_table("examples.parquet")
        known = golden[golden["source_doc_id"].notna()]
        hits = index.search(indexer.embed(list(known["prompt"])), max(KS)) if len(known) else []
        document_of = dict(zip(passages["chunk_id"], passages["external_id"].where(passages["external_id"].notna(),
                                                                                  passages["doc_id"])))
        recall = recall_at_k([[document_of[c] for c, _ in row] for row in hits], list(known["source_doc_id"]), KS)
        version = version_of(fingerprint(passages, ["chunk_id", "text"]),
                             {"document_chunks": document_chunks.version, "golden_dataset": golden_dataset.version},
                             [indexer.model, indexer.max_chars], code="3")
        artifact = Artifact.create(store, context.asset_key, version)
        with artifact.writing() as out:
            np.save(out / "vectors.npy", index.vectors)
            write_table(out, "passages.parquet", passages)
            write_json(out, "index.json", {"model": indexer.model, "dim": int(index.vectors.shape[1]),
                                           "passages": len(passages), "documents": int(passages["doc_id"].nunique()),
                                           "recall": recall, "golden_questions_with_source": len(known)})
        context.log.info("retrieval " + ", ".join(f"{k}={v:.3f}" for k, v in recall.items()))
        return emit(artifact, {
            "passages": MetadataValue.int(len(passages)),
            "documents": MetadataValue.int(int(passages["doc_id"].nunique())),
            "dimensions": MetadataValue.int(int(index.vectors.shape[1])),
            "embedding_model": MetadataValue.text(indexer.model),
            "golden_questions_with_source": MetadataValue.int(len(known)),
            **{k.replace("@", "_at_"): MetadataValue.float(v) for k, v in recall.items()},
        })

    return [knowledge_index]
