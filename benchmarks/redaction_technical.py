"""Over-redaction of technical text: how many sentences of real technical documents redaction changes without any
personal data in them, with and without the policy's `technical_text` rules, beside recall on the labelled
held-out personal-data sets.

Corpus: the 60 package READMEs named in `benchmarks/data/real_corpus/documents.json` (Markdown and
reStructuredText in installed packages' metadata; no one on the project wrote them), redacted as written, each
file one text, with the shipped policy (`policies/redaction.yaml`) — once with `technical_text: false` (the
baseline: the person rules before it) and once as shipped (`technical_text: true`). A sentence (a line, or a
sentence of a paragraph) is *changed* when a finding the redaction replaces overlaps it; it *holds personal data*
when it contains a value of `benchmarks/data/technical_redaction/people.json` — the real people and personal addresses of these
READMEs, listed by hand from every finding of both runs (authors, maintainers, cited researchers). Over-redaction:
changed sentences without personal data / all sentences. Missed: labelled values still present after redaction.

Recall: `tests/data/pii_heldout.jsonl` and `tests/data/pii_names.jsonl` (Faker-made records in other locales and
templates than the sample's) under both settings. Target (issue "The first hour on your own documents"):
over-redaction <= 2% of sentences while held-out recall stays >= 99%.

    python benchmarks/redaction_technical.py            # both runs, results/redaction_technical.json
    python benchmarks/redaction_technical.py --findings # every finding of both runs, to label people.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from host import host, save  # noqa: E402 (benchmarks/host.py)
from resources.offline import apply_offline_defaults  # noqa: E402

apply_offline_defaults()

from knowledge_real_corpus import write_readmes  # noqa: E402
from resources.redaction.labelled import labelled_recall, load_labelled  # noqa: E402
from resources.redaction.policy import RedactionPolicy  # noqa: E402
from resources.redaction.redactor import PiiRedactor  # noqa: E402

DATA = ROOT / "benchmarks" / "data"
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(\[*`])|\n+")


def readmes() -> dict[str, str]:
    names = json.loads((DATA / "real_corpus" / "documents.json").read_text())["all"]
    with tempfile.TemporaryDirectory() as folder:
        write_readmes(Path(folder), names, 12_000)
        return {p.name: p.read_text(encoding="utf-8") for p in sorted(Path(folder).iterdir())}


def redactor(technical: bool, folder: Path) -> PiiRedactor:
    policy = RedactionPolicy.load(ROOT / "policies" / "redaction.yaml").model_copy(update={"technical_text": technical})
    path = folder / f"policy-{technical}.json"
    path.write_text(policy.model_dump_json())
    return PiiRedactor(policy_path=str(path))


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every sentence: a line, or a sentence of a paragraph."""
    spans, start = [], 0
    for m in _SENTENCE.finditer(text):
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(text)))
    return [(a, b) for a, b in spans if text[a:b].strip()]


def over_redaction(texts: dict[str, str], findings: dict[str, list], redacted: dict[str, str], people: list[str]) -> dict:
    """A sentence is changed when a finding of the redaction overlaps it (the spans the engine replaces, read on the
    text as written); it holds personal data when it contains a labelled value. Labelled values left: still in the
    redacted text."""
    total = changed = personal = 0
    examples, missed = [], []
    for name, text in texts.items():
        spans = [(r.start, r.end, r.entity_type) for r in findings[name]]
        for a, b in sentence_spans(text):
            total += 1
            hits = [(s, e, kind) for s, e, kind in spans if s < b and a < e]
            if not hits:
                continue
            sentence = text[a:b]
            if any(p in sentence for p in people):
                personal += 1
                continue
            changed += 1
            if len(examples) < 60:
                examples.append({"file": name, "sentence": sentence.strip()[:200],
                                 "replaced": [f"{kind}: {text[s:e]}" for s, e, kind in hits]})
        missed += [{"file": name, "value": p} for p in people if p in redacted[name]]
    return {"sentences": total, "changed_with_personal_data": personal, "changed_without_personal_data": changed,
            "over_redaction": round(changed / max(1, total), 4), "labelled_values_left": missed,
            "examples": examples}


def recall(red: PiiRedactor) -> dict:
    out = {}
    for name in ("pii_heldout.jsonl", "pii_names.jsonl"):
        rows = load_labelled(ROOT / "tests" / "data" / name)
        scores = labelled_recall(rows, lambda texts: [r.text for r in red.engine().redact(texts)])
        out[name] = {k: scores[k] for k in ("overall", "planted", "by_entity", "over_redaction")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--findings", action="store_true", help="print every finding of both runs (for labelling)")
    args = parser.parse_args()
    texts = readmes()
    people = json.loads((DATA / "technical_redaction" / "people.json").read_text())["values"]
    with tempfile.TemporaryDirectory() as folder:
        runs = {}
        for technical in (False, True):
            red = redactor(technical, Path(folder))
            if args.findings:
                for (name, text), found in zip(texts.items(), red.engine().analyze(list(texts.values()))):
                    for r in found:
                        print(f"{technical!s:5} {name:28} {r.entity_type:14} {text[r.start:r.end]!r}")
                continue
            found = dict(zip(texts, red.engine().analyze(list(texts.values()))))
            done = dict(zip(texts, (r.text for r in red.engine().redact(list(texts.values())))))
            runs["technical_text" if technical else "baseline"] = {**over_redaction(texts, found, done, people),
                                                                   "recall": recall(red)}
    if args.findings:
        return
    result = {"benchmark": "redaction_technical", "host": host(), "documents": len(texts),
              "labelled_values": len(people), "runs": runs,
              "targets": {"over_redaction_at_most_0.02": runs["technical_text"]["over_redaction"] <= 0.02,
                          "heldout_recall_at_least_0.99": runs["technical_text"]["recall"]["pii_heldout.jsonl"]["overall"] >= 0.99}}
    save("redaction_technical", result, echo=False)
    for label, run in runs.items():
        print(f"{label:15} over-redaction {run['over_redaction']:.4f} ({run['changed_without_personal_data']} of "
              f"{run['sentences']} sentences), changed with personal data {run['changed_with_personal_data']}, labelled "
              f"values left {len(run['labelled_values_left'])}; held-out recall "
              f"{run['recall']['pii_heldout.jsonl']['overall']}, names {run['recall']['pii_names.jsonl']['overall']}")
    print(f"host flags: {' '.join(result['host']['cpu_flags'])}\nwrote benchmarks/results/redaction_technical.json")


if __name__ == "__main__":
    main()
