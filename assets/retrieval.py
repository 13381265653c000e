"""Retrieval: a model's knowledge index over its passages (document chunks), used to ground answers."""

import pandas as pd
from dagster import AssetExecutionContext, AssetIn, AutomationCondition, MetadataValue, Output, asset

from assets.metadata import asset_args, emit, key
from resources.artifacts import Artifact, version_of
from resources.retrieval.index import HIDDEN, DenseIndex, KnowledgeIndexer, excluded, load_vectors, recall_at_k
from resources.retrieval.segments import vector_segments, write_index
from resources.segments import segment_key
from resources.spec import ModelSpec
from resources.storage import ArtifactStore, write_json

KS = (1, 3, 5)


def build(spec: ModelSpec) -> list:
    @asset(key=key(spec, "knowledge_index"), kinds={"numpy", "parquet"}, code_version="4",
           ins={"document_chunks": AssetIn(key=key(spec, "document_chunks")),
                "golden_dataset": AssetIn(key=key(spec, "golden_dataset"))},
           automation_condition=AutomationCondition.eager(), **asset_args(spec, "retrieval"))
    def knowledge_index(context: AssetExecutionContext, indexer: KnowledgeIndexer, store: ArtifactStore,
                        document_chunks: Artifact, golden_dataset: Artifact) -> Output[Artifact]:
        """Sentence embeddings of every passage (document chunk) of the model's corpus (all-MiniLM-L6-v2,
        offline), with retrieval quality measured as recall@k of each golden question's known source document
        (a hit: a passage of that document among the first k). Incremental: one vector segment per chunk segment,
        so only a new batch's passages are embedded (`segments_embedded` / `segments_reused`). The passages of a
        document a later batch brought a new version of (`superseded`), and of the documents hashed out of the index
        (dataset.unanswerable_holdout_fraction: the golden set's unanswerable questions), stay in the vectors but are
        never retrieved."""
        manifest = document_chunks.read_json("manifest.json")
        build = vector_segments(store, spec.name, manifest["segments"], indexer)
        superseded = sorted(manifest.get("superseded") or [])  # earlier versions of documents a later batch replaced
        context.log.info(f"vector segments: {build.made} embedded ({build.passages_embedded} passages), {build.reused} reused")
        version = version_of([segment_key(build.keys), superseded], {"document_chunks": document_chunks.version,
                                                                      "golden_dataset": golden_dataset.version},
                             [indexer.identity(), spec.dataset.split_rules()], code="5")
        artifact = Artifact.create(store, context.asset_key, version)
        with artifact.writing() as out:
            write_index(store, spec.name, build.keys, out)
            vectors = load_vectors(out)
            passages = pd.read_parquet(out / "passages.parquet", columns=["chunk_id", "doc_id", "external_id"])
            split = spec.dataset.split_rules()
            unindexed = sorted({d for d in passages["doc_id"] if split.split_of(str(d)) == "unindexed"})
            write_json(out, HIDDEN, {"superseded": superseded, "unindexed": unindexed})
            index = DenseIndex(list(passages["chunk_id"]), vectors, excluded(passages, superseded + unindexed))
            golden = golden_dataset.read_table("examples.parquet")
            known = golden[golden["source_doc_id"].notna()]
            hits = index.search(indexer.embed(list(known["prompt"])), max(KS)) if len(known) and len(passages) else []
            document_of = dict(zip(passages["chunk_id"], passages["external_id"].where(passages["external_id"].notna(),
                                                                                      passages["doc_id"])))
            recall = recall_at_k([[document_of[c] for c, _ in row] for row in hits], list(known["source_doc_id"]), KS)
            write_json(out, "index.json", {"model": indexer.model, "dim": int(vectors.shape[1]) if vectors.size else 0,
                                           "passages": len(passages), "documents": int(passages["doc_id"].nunique()),
                                           "recall": recall, "golden_questions_with_source": len(known),
                                           "segments": build.keys})
        context.log.info("retrieval " + ", ".join(f"{k}={v:.3f}" for k, v in recall.items()))
        return emit(artifact, {
            "passages": MetadataValue.int(len(passages)),
            "superseded_documents": MetadataValue.int(len(superseded)),
            "unindexed_documents": MetadataValue.int(len(unindexed)),
            "documents": MetadataValue.int(int(passages["doc_id"].nunique())),
            "dimensions": MetadataValue.int(int(vectors.shape[1]) if vectors.size else 0),
            "segments_embedded": MetadataValue.int(build.made),
            "segments_reused": MetadataValue.int(build.reused),
            "passages_embedded": MetadataValue.int(build.passages_embedded),
            "embedding_model": MetadataValue.text(indexer.model),
            "golden_questions_with_source": MetadataValue.int(len(known)),
            **{k.replace("@", "_at_"): MetadataValue.float(v) for k, v in recall.items()},
        })

    return [knowledge_index]
