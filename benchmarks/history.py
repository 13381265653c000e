"""What the history benchmarks share (`holdout_incremental`, `qa_incremental`): H + 1 batches of generated
documents as the corpus builder reads them, and the command line that runs one point per history size."""

from __future__ import annotations

import random
from typing import Callable

from host import host, save


def generated_batches(curator, batches: int, batch_docs: int, seed: int, openings: bool = False):
    """`batches` batches of `batch_docs` documents from `scale.generate_documents` (seeded), each with a distinct
    three-word title (the generator's "Page i" makes every heading question a near-duplicate of the others) and,
    with `openings`, a first sentence naming it. Returns (tables by batch name, in order; the loader `build_corpus`
    reads a batch through)."""
    from scale import _words, generate_documents

    docs = list(generate_documents(batches * batch_docs, seed=seed))
    words, _ = _words()
    rng = random.Random(seed)
    for doc in docs:
        doc["title"] = " ".join(rng.choice(words) for _ in range(3)).title()
        if openings:
            doc["text"] = f"{doc['title']} {rng.choice(words)} {rng.choice(words)}. " + doc["text"]
    tables = {}
    for b in range(batches):
        part = docs[b * batch_docs : (b + 1) * batch_docs]
        tables[f"batch-{b:05d}"] = [{"doc_id": d["id"], "text": d["text"], "title": d["title"], "batch": f"batch-{b:05d}",
                                     "kind": "text", "pii_found": 0, "dedup_key": k, "minhash": m}
                                    for d, (k, m) in zip(part, curator.signatures([d["text"] for d in part]))]
    return tables, lambda batch: (tables[batch], {"documents": len(tables[batch])})


def run_histories(description: str, name: str, histories: tuple[int, ...], point: Callable[[int], dict], **fields) -> int:
    """`--histories` (default `histories`) and `--out` (default `name`): one point per size, printed as it comes,
    then saved under benchmarks/results/ with `fields` and the host."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--histories", type=int, nargs="+", default=list(histories))
    parser.add_argument("--out", default=name, help="result name under benchmarks/results/")
    args = parser.parse_args()
    points = []
    for history in args.histories:
        points.append(point(history))
        print(points[-1], flush=True)
    save(args.out, {"benchmark": name, **fields, "host": host(), "points": points})
    return 0
