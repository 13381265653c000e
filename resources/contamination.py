"""Golden answers in training targets: the contamination the dataset build removes and the evaluation measures.

A golden question is contaminated when what a right answer says was trained on: its reference answer's clause
that states a `must_include` fact (every sentence of the reference when it lists none) stands in the target (an
assistant turn) of a training example — nearly word for word (at least `threshold` of its word n-grams, n = 4,
after lower-casing and dropping punctuation, occur in that one target), or in other words (the target states one of
the question's facts, unit-aware, and holds at least `threshold` of the clause's content words: "Report it to the
security team within one hour" repeats "Lost devices must be reported to the security team within one hour"). `instruction_dataset`
drops such examples (`golden_answer_overlap`), and `eval_report` measures the share of golden questions still
contaminated by the examples the adapter was trained on: above the promotion policy's `max_contamination` the
gate refuses to decide.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Iterable

N = 4
THRESHOLD = 0.5
CLAUSE_WORDS = 6  # a shorter clause ("On Business and Enterprise") says too little to be the fact's own words


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:[.,][0-9]+)*", text.casefold())


def _grams(tokens: list[str], n: int = N) -> set[tuple[str, ...]]:
    if len(tokens) < n:
        return {tuple(tokens)} if tokens else set()
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


@dataclass(frozen=True)
class Probe:
    golden_id: str
    text: str  # the reference sentence a right answer states
    facts: tuple[str, ...] = ()  # the golden question's must_include facts
    question: str = ""


def probes_of(golden: Iterable[dict]) -> list[Probe]:
    """The sentences of each answerable golden example that a training target must not hold: those of its reference
    answer that state one of its facts (`resources.knowledge.claims.states`), else every sentence of at least
    three words."""
    from resources.knowledge.claims import sentences, states

    out = []
    for row in golden:
        if "unanswerable" in [str(t) for t in (row.get("tags") if row.get("tags") is not None else [])]:
            continue
        reference = str(row.get("answer") or "")
        parts = [s for s in sentences(reference) if len(_tokens(s)) >= 3] or ([reference] if reference.strip() else [])
        facts = [str(f) for f in (row.get("must_include") if row.get("must_include") is not None else [])]
        question = str(row.get("prompt") or "")
        stating = [s for s in parts if any(states(f, s, question, reference) for f in facts)]
        # of a sentence that states a fact, the clause that does: a target that repeats only that clause has it too
        clauses = [c for s in stating for c in _clauses(s) if any(states(f, c, question, reference) for f in facts)]
        out += [Probe(str(row["id"]), s, tuple(facts), question) for s in (clauses or stating or parts)]
    return out


def _clauses(sentence: str) -> list[str]:
    """A sentence's clauses (cut at commas, semicolons and colons), each kept only when it has at least CLAUSE_WORDS words;
    the whole sentence when none has."""
    parts = [p.strip() for p in re.split(r"[,;:]\s+", sentence) if len(_tokens(p)) >= CLAUSE_WORDS]
    return parts or [sentence]


@dataclass(frozen=True)
class Overlap:
    probe: int  # index into the probes
    target: int  # index into the targets
    containment: float  # share of the probe's n-grams found in the target


_STOP = frozenset("""a an the of to in on at for by per and or but with within from into than as is are was were be
been it its this that these those up over under about after before each every any all no not only can may must will
do does did has have had you we they their our your i""".split())


def _content(tokens: list[str]) -> set[str]:
    return {t[:-1] if len(t) > 3 and t.endswith("s") else t for t in tokens if t not in _STOP and not t[0].isdigit()}


class ProbeIndex:
    """The probes' n-grams and content words, to compare many targets with them in one pass each."""

    def __init__(self, probes: list[Probe], threshold: float = THRESHOLD):
        self.probes, self.threshold = probes, threshold
        self.sizes, self.words = [], []
        self.by_gram: dict[tuple, list[int]] = defaultdict(list)
        self.by_word: dict[str, list[int]] = defaultdict(list)
        for i, probe in enumerate(probes):
            tokens = _tokens(probe.text)
            grams = _grams(tokens)
            self.sizes.append(len(grams))
            for gram in grams:
                self.by_gram[gram].append(i)
            words = _content(tokens)
            self.words.append(len(words))
            for word in words:
                self.by_word[word].append(i)

    def overlaps(self, target: str) -> list[tuple[int, float]]:
        """(probe, containment) for every probe `target` holds at or above the threshold: by n-grams, or by content
        words where the target also states one of the probe's facts (a paraphrase)."""
        if not self.probes:
            return []
        tokens = _tokens(target)
        hits: Counter = Counter()
        for gram in _grams(tokens) | {tuple(tokens[i:i + k]) for k in range(1, N) for i in range(len(tokens) - k + 1)}:
            for i in self.by_gram.get(gram, ()):
                hits[i] += 1
        found = {i: round(n / self.sizes[i], 4) for i, n in hits.items() if self.sizes[i] and n / self.sizes[i] >= self.threshold}
        shared: Counter = Counter()
        for word in _content(tokens):
            for i in self.by_word.get(word, ()):
                shared[i] += 1
        for i, n in shared.items():
            if i in found or not self.probes[i].facts or n / max(self.words[i], 1) < self.threshold:
                continue
            from resources.knowledge.claims import states

            probe = self.probes[i]
            if any(states(f, target, probe.question, probe.text) for f in probe.facts):
                found[i] = round(n / self.words[i], 4)
        return sorted(found.items())


def find_overlaps(probes: list[Probe], targets: list[str], threshold: float = THRESHOLD) -> list[Overlap]:
    index = ProbeIndex(probes, threshold)
    return [Overlap(p, t, c) for t, target in enumerate(targets) for p, c in index.overlaps(target)]


def contamination_report(golden: list[dict], targets: list[str], target_ids: list[str] | None = None,
                         threshold: float = THRESHOLD, shown: int = 20) -> dict:
    """How many answerable golden questions have a probe sentence in some training target: the rate the gate reads,
    and the first `shown` cases (golden id, its sentence, the training example's id, the containment)."""
    probes = probes_of(golden)
    checked = len({p.golden_id for p in probes})
    found = find_overlaps(probes, targets, threshold)
    hit_ids = sorted({probes[o.probe].golden_id for o in found})
    cases = [{"golden_id": probes[o.probe].golden_id, "sentence": probes[o.probe].text,
              "training_example": target_ids[o.target] if target_ids else o.target, "containment": o.containment}
             for o in sorted(found, key=lambda o: (-o.containment, o.probe))[:shown]]
    return {"checked": checked, "contaminated": len(hit_ids), "rate": round(len(hit_ids) / checked, 4) if checked else 0.0,
            "golden_ids": hit_ids, "cases": cases, "threshold": threshold, "ngram": N}
