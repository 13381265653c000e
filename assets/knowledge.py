"""Knowledge: a model's documents as passages (chunks) and the training examples made from their sections."""

from collections import Counter
from functools import partial

from dagster import AssetCheckResult, AssetExecutionContext, AssetIn, AutomationCondition, MetadataValue, Output, asset, asset_check

from assets.metadata import asset_args, emit, key, reason_table
from resources.artifacts import Artifact, config_of, version_of
from resources.knowledge.chunking import Chunker
from resources.knowledge.segments import (chunk_segments, chunk_trace_verdicts, corpus_records, example_segments, link_chunks,
                                         link_examples)
from resources.knowledge.examples import (GROUNDED_STRATEGIES, JUDGE_PROMPT, KNOWLEDGE_EXAMPLE_COLUMNS, QA_PROMPT,
                                         build_knowledge_examples, qa_examples)
from resources.knowledge.teacher import NOT_CONFIGURED, TeacherModel
from resources.models.base_model import BaseModelSource
from resources.records import DROPPED_COLUMNS, fingerprint, frame, rows
from resources.retrieval.index import KnowledgeIndexer
from resources.retrieval.segments import retrieve_upto, vector_keys
from resources.segments import segment_key
from resources.spec import ModelSpec
from resources.storage import ArtifactStore, write_json, write_table



def build(spec: ModelSpec) -> list:
    stage = asset_args(spec, "knowledge")
    policy = spec.knowledge

    @asset(key=key(spec, "document_chunks"), kinds={"python", "parquet"}, code_version="2",
           ins={"corpus": AssetIn(key=key(spec, "corpus"))}, automation_condition=AutomationCondition.eager(), **stage)
    def document_chunks(context: AssetExecutionContext, model_source: BaseModelSource, store: ArtifactStore,
                        corpus: Artifact) -> Output[Artifact]:
        """The corpus's redacted documents cut into passages: never across a section, at most `chunk_tokens` of
        the base model's tokenizer, each with its document, title, section path, character span in the redacted
        text and the raw file's sha256 (an answer traces to a passage, the passage to a file). Incremental: one
        chunk segment per corpus segment, cut once and linked (`segments_cut` / `segments_reused`)."""
        tokenizer = model_source.for_model(spec.base_model, spec.base_model_revision).tokenizer()
        chunker = Chunker(tokenizer.backend_tokenizer, policy.chunk_rules())
        config = config_of(policy.chunk_rules(), {"tokenizer": [spec.base_model, spec.base_model_revision]})
        batches = corpus.read_json("batches.json")
        chains, superseded = batches["segments"], sorted(batches.get("superseded") or {})
        build = chunk_segments(store, spec.name, chains, chunker, config)
        context.log.info(f"chunk segments: {build.made} cut, {build.reused} reused")
        # the version hashes what made the passages (each segment's key hashes its corpus segment and the rules)
        version = version_of([segment_key(build.keys), superseded], {"corpus": corpus.version}, config, code="3")
        # a passage that carries instructions aimed at the model: flagged here, left out of grounded prompts by the gateway
        instructed = build.flagged
        for row in instructed[:50]:
            context.log.warning(f"passage {row['chunk_id']} of {row['source_path']} ({row['section'] or 'no section'}) "
                                f"carries instructions aimed at the model: {', '.join(row['patterns'])}")
        artifact = Artifact.create(store, context.asset_key, version)
        with artifact.writing() as out:
            link_chunks(store, spec.name, build.keys, out)
            write_json(out, "manifest.json", {"corpus": corpus.key, "corpus_version": corpus.version,
                                              "segments": build.keys, "corpus_segments": chains,
                                              "superseded": superseded})  # earlier versions: out of retrieval
            write_json(out, "flagged.json", instructed)
        stats = build.stats  # summed from the segments' own: no table is read again
        documents = int(corpus.read_json("ledger.json")["kept"])
        return emit(artifact, {
            "documents": MetadataValue.int(documents),
            "documents_without_chunks": MetadataValue.int(stats["documents_without_chunks"]),
            "segments_cut": MetadataValue.int(build.made),
            "segments_reused": MetadataValue.int(build.reused),
            "chunks": MetadataValue.int(stats["chunks"]),
            "tokens_p50": MetadataValue.int(stats["tokens_p50"]),
            "tokens_max": MetadataValue.int(stats["tokens_max"]),
            "chunks_per_document_max": MetadataValue.int(stats["chunks_per_document_max"]),
            "sections": MetadataValue.int(stats["sections"]),
            "chunk_rules": MetadataValue.json(config_of(policy.chunk_rules())[0]),
            "passages_with_instructions": MetadataValue.json(instructed[:200]),
        })

    @asset_check(asset=document_chunks, blocking=True, description="Every chunk is exactly the redacted text at its "
                 "span, within the token bound, and every document of the corpus gave at least one chunk.")
    def chunks_trace_to_their_text(store: ArtifactStore, document_chunks: Artifact) -> AssetCheckResult:
        """Checked one corpus segment at a time (its passages against its documents), each verdict kept by the two
        parts' sha256: one more batch checks one more pair."""
        corpus_key = document_chunks.read_json("manifest.json")["corpus"]
        checked = chunk_trace_verdicts(store, spec.name, document_chunks.file("chunks.parquet"),
                                       store.path(f"{spec.name}/corpus", corpus_key, "documents.parquet"), policy.chunk_tokens)
        problems = [p for v in checked.verdicts for p in v["problems"]]
        return AssetCheckResult(passed=not problems, metadata={
            "chunks": MetadataValue.int(sum(v["chunks"] for v in checked.verdicts)),
            "parts_checked_now": MetadataValue.int(checked.made), "parts_checked_before": MetadataValue.int(checked.reused),
            "problems": MetadataValue.md("\n".join(f"- {p}" for p in problems[:50]) or "none")})

    @asset(key=key(spec, "knowledge_examples"), kinds={"python", "parquet"}, code_version="2",
           ins={"document_chunks": AssetIn(key=key(spec, "document_chunks")),
                "knowledge_index": AssetIn(key=key(spec, "knowledge_index"))},
           automation_condition=AutomationCondition.eager(), **stage)
    def knowledge_examples(context: AssetExecutionContext, indexer: KnowledgeIndexer, teacher: TeacherModel,
                           store: ArtifactStore, document_chunks: Artifact, knowledge_index: Artifact) -> Output[Artifact]:
        """Training examples made from the sections of plain-text documents, by the model's offline strategies
        (`headings`: the section's heading as a question, its text as the answer; `raft`: the same in the grounded
        prompt, among retrieved distractors, citing it or abstaining; `cloze`: a question for each value a sentence
        states, answered by the sentence in the grounded prompt). Every candidate is counted: generated,
        kept, dropped by reason. They join instruction_dataset, which splits them by their document and guards
        them against the golden set like every other example. Incremental: one example segment per chunk segment,
        `raft` and `cloze` grounded among the passages of that segment and the ones before it (the index as it stood
        when the segment joined it), `continued_pretraining`'s ratio per segment, `qa` asking the teacher about the
        segment's passages and dropping questions that duplicate one an earlier segment kept; a segment the teacher
        left unfinished (a cap, a timeout) is made again by the next run (`segments_partial`)."""
        used = spec.dataset.text_strategy == "sections"
        split = spec.dataset.split_rules()
        manifest = document_chunks.read_json("manifest.json")
        config = config_of(policy, {"text_strategy": spec.dataset.text_strategy, "title_template": spec.dataset.title_template,
                                    "split": split})
        vectors = knowledge_index.read_json("index.json").get("segments")
        if not used or vectors == vector_keys(manifest["segments"], indexer):
            # made one chunk segment at a time: a new batch's sections only (none where sections are not used), raft
            # and cloze grounded among the passages of the segments up to theirs, qa asking the teacher about them
            session = teacher.session() if used and "qa" in policy.strategies and teacher.configured else None
            if used and "qa" in policy.strategies and session is None:
                context.log.warning(f"the qa strategy is configured but {NOT_CONFIGURED}: only the offline strategies ran")
            segments = example_segments(store, spec.name, manifest["segments"], policy, spec.dataset.title_template, split,
                                        sections=used, retrieve_upto=partial(retrieve_upto, store, spec.name, indexer, vectors),
                                        index_identity=indexer.identity(), session=session,
                                        teacher_identity=teacher.identity() if session else None,
                                        corpus_chains=manifest.get("corpus_segments"))
            context.log.info(f"example segments: {segments.made} made, {segments.reused} reused")
            usage = session.usage.to_dict() if session else None
            if usage and usage["stopped"]:
                context.log.warning(f"qa generation stopped early: {usage['stopped']}; the examples made so far are kept and "
                                    f"the {segments.partial} segments left unfinished are made again by the next run")
            counts, made, reused, unfinished = segments.counts, segments.made, segments.reused, segments.partial
            version = version_of(segment_key(segments.keys), {"document_chunks": document_chunks.version,
                                                              "knowledge_index": knowledge_index.version}, config, code="2")
            artifact = Artifact.create(store, context.asset_key, version)
            with artifact.writing() as out:
                link_examples(store, spec.name, segments.keys, out)
                write_json(out, "counts.json", counts)
                write_json(out, "teacher.json", usage)
                write_json(out, "manifest.json", {"segments": segments.keys,
                                                  "corpus_segments": manifest.get("corpus_segments")})
            examples = sum(n for name, n in counts.items() if name.endswith("_kept"))
        else:
            chunks = rows(document_chunks.read_table("chunks.parquet"))
            held_out = {c["doc_id"] for c in chunks if split.held_out(c["doc_id"])}
            loaded = indexer.load(knowledge_index.path) if used and GROUNDED_STRATEGIES & set(policy.strategies) else None
            records = [r for chain in manifest.get("corpus_segments") or [] for r in corpus_records(store, spec.name, chain)] \
                if used and "raft_pairs" in policy.strategies else []
            build = build_knowledge_examples(chunks if used else [], policy, spec.dataset.title_template,
                                             retrieve=(lambda qs, k: loaded.passages(qs, k)) if loaded else None,
                                             held_out_docs=held_out, records=records)
            usage, made, reused, unfinished = None, 0, 0, 0
            if used and "qa" in policy.strategies:
                if teacher.configured:  # only redacted passages reach the teacher: document_chunks are cut from the corpus
                    session = teacher.session()
                    qa_examples(chunks, policy, session, held_out, out=build)
                    usage = session.usage.to_dict()
                    if usage["stopped"]:
                        context.log.warning(f"qa generation stopped early: {usage['stopped']}; the examples made so far are kept")
                else:
                    context.log.warning(f"the qa strategy is configured but {NOT_CONFIGURED}: only the offline strategies ran")
            table = frame(build.examples, KNOWLEDGE_EXAMPLE_COLUMNS)
            counts = dict(build.counts)
            version = version_of(fingerprint(table, ["doc_id", "messages"]),
                                 {"document_chunks": document_chunks.version, "knowledge_index": knowledge_index.version},
                                 [*config, {"teacher": teacher.identity() if usage is not None else None,
                                            "prompts": [QA_PROMPT, JUDGE_PROMPT] if usage is not None else None}])
            artifact = Artifact.create(store, context.asset_key, version)
            with artifact.writing() as out:
                write_table(out, "examples.parquet", table)
                write_table(out, "dropped.parquet", frame(build.dropped, DROPPED_COLUMNS))
                write_json(out, "counts.json", counts)
                write_json(out, "teacher.json", usage)
                write_json(out, "manifest.json", {"segments": None, "corpus_segments": manifest.get("corpus_segments")})
            examples = len(table)
        if not used:
            context.log.info(f"dataset.text_strategy is {spec.dataset.text_strategy!r}: no examples from sections")
        yields = "\n".join(f"| {s} | {counts.get(f'{s}_generated', 0)} | {counts.get(f'{s}_kept', 0)} |"
                           for s in ("headings", "raft", "cloze", "raft_pairs", "continued_pretraining", "qa")
                           if s in policy.strategies)
        drops = Counter({k.split("_dropped_", 1)[1]: v for k, v in counts.items() if "_dropped_" in k})
        return emit(artifact, {
            "examples": MetadataValue.int(examples),
            "yield": MetadataValue.md("| strategy | generated | kept |\n|---|---|---|\n" + (yields or "| (none) | 0 | 0 |")),
            "dropped": reason_table(drops),
            "strategies": MetadataValue.json(list(policy.strategies) if used else []),
            "counts": MetadataValue.json(counts),
            "teacher": MetadataValue.json(usage if usage is not None else {"used": False}),
            "segments_made": MetadataValue.int(made),
            "segments_reused": MetadataValue.int(reused),
            "segments_partial": MetadataValue.int(unfinished),
        })

    return [document_chunks, chunks_trace_to_their_text, knowledge_examples]
