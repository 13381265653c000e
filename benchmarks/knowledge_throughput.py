"""Chunking + offline example generation throughput, in MB of text per second, one thread.

Parsing and embedding are excluded (as the target says): the documents are parsed once up front; the timed
part is what `document_chunks` and `knowledge_examples` (headings) do with the canonical text (the pipeline
runs them on the redacted text, which differs from it in a few replaced spans, not in what the work costs).

- baseline: what a user writes first — the base model's tokenizer over the whole document, cut into fixed
  windows of `chunk_tokens` with the overlap, decoded back to text (no sections, no exact spans);
- ours: `Chunker` (section tree from markdown-it-py, semantic-text-splitter's Markdown splitter inside each
  section, exact character spans) followed by the `headings` strategy.

Two corpora, side by side in one run: the sample's documents (policies and handbooks) and real documents no
one on the project wrote (the long descriptions of the installed packages, Markdown and reStructuredText).
The host's CPU flags are recorded with the figures. Results: benchmarks/results/knowledge_throughput.json.
"""

from __future__ import annotations

import email
import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from host import host  # noqa: E402 (benchmarks/host.py: the machine quoted beside every figure)
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from resources.offline import apply_offline_defaults  # noqa: E402

apply_offline_defaults()

from resources.ingestion.readers import ReaderLimits, read_batch  # noqa: E402
from resources.knowledge.chunking import ChunkRules, Chunker  # noqa: E402
from resources.knowledge.examples import build_knowledge_examples  # noqa: E402
from resources.knowledge.parsing import parse_document  # noqa: E402
from resources.knowledge.policy import KnowledgePolicy  # noqa: E402
from resources.models.base_model import BaseModelSource  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def cpu_flags() -> list[str]:
    return host()["cpu_flags"]


def sample_documents() -> list[dict]:
    inbox = ROOT / "data" / "sample" / "policy" / "inbox"
    docs = []
    for batch in ("policies", "handbooks"):
        docs += read_batch(batch, inbox / batch, inbox, ReaderLimits()).documents
    return docs


def real_documents(limit: int = 200) -> list[dict]:
    docs = []
    for dist in sorted(metadata.distributions(), key=lambda d: (d.metadata["Name"] or "").lower()):
        meta = email.message_from_string(dist.read_text("METADATA") or "")
        body, kind = meta.get_payload() or "", (meta.get("Description-Content-Type") or "").lower()
        fmt = "md" if "markdown" in kind else "rst" if "rst" in kind else None
        if fmt is None or len(body) < 400:
            continue
        parsed = parse_document(body.encode(), fmt, f"{dist.metadata['Name']}.{fmt}")
        docs.append({"doc_id": dist.metadata["Name"], "title": parsed.title, "kind": "text", "text": parsed.text})
        if len(docs) == limit:
            break
    return docs


def baseline(tokenizer, docs, rules: ChunkRules) -> int:
    n = 0
    step = rules.max_tokens - rules.overlap_tokens
    for doc in docs:
        ids = tokenizer.encode(doc["text"], add_special_tokens=False).ids
        for start in range(0, max(len(ids), 1), step):
            tokenizer.decode(ids[start:start + rules.max_tokens])
            n += 1
    return n


def ours(chunker: Chunker, docs, policy: KnowledgePolicy) -> tuple[int, int]:
    chunks, _ = chunker.chunk_all(docs)
    build = build_knowledge_examples(chunks, policy, "What does our documentation say about {title}?")
    return len(chunks), len(build.examples)


def timed(fn, *args):
    best, out = float("inf"), None
    for _ in range(ROUNDS):
        start = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    tokenizer = BaseModelSource().tokenizer().backend_tokenizer
    policy = KnowledgePolicy(strategies=["headings"])  # the offline generation measured here
    chunker = Chunker(tokenizer, policy.chunk_rules())
    results = {"host": {"cpu_flags": cpu_flags(), "cpus": os.cpu_count(), "python": platform.python_version(),
                        "threads": 1, "rounds": ROUNDS}, "corpora": {}}
    for name, docs in (("sample", sample_documents()), ("real", real_documents())):
        mb = sum(len(d["text"].encode()) for d in docs) / 1e6
        base_s, windows = timed(baseline, tokenizer, docs, policy.chunk_rules())
        ours_s, (chunks, examples) = timed(ours, chunker, docs, policy)
        results["corpora"][name] = {
            "documents": len(docs), "mb": round(mb, 3),
            "baseline": {"seconds": round(base_s, 4), "mb_per_s": round(mb / base_s, 2), "windows": windows},
            "ours": {"seconds": round(ours_s, 4), "mb_per_s": round(mb / ours_s, 2), "chunks": chunks, "examples": examples},
            "target_mb_per_s": 1.0, "meets_target": mb / ours_s >= 1.0,
        }
        print(f"{name}: {len(docs)} documents, {mb:.2f} MB: baseline {mb / base_s:.2f} MB/s ({windows} windows), "
              f"ours {mb / ours_s:.2f} MB/s ({chunks} chunks, {examples} examples)")
    out = ROOT / "benchmarks" / "results" / "knowledge_throughput.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"host flags: {' '.join(results['host']['cpu_flags'])}\nwrote {out}")


if __name__ == "__main__":
    main()
