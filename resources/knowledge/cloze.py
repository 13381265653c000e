"""The `cloze` strategy's questions: one per named value in a sentence, answered by that sentence (no LLM).

A sentence that states a value — a number of days, a percentage, a price, a limit — becomes a question by
putting a question phrase where the value stood ("Full-time staff get how many days of paid annual leave
each calendar year?"), the rule-based form of cloze translation (Lewis et al., *Unsupervised Question
Answering by Cloze Translation*, ACL 2019). The values are spaCy's named entities of the value types
(CARDINAL, QUANTITY, PERCENT, MONEY, DATE, TIME) that hold a digit, found by the same English pipeline
that redaction loads; sentences come from spaCy's parser. The answer is the sentence itself, short enough to
be an answer and not a passage, so a model trained on these learns to find the sentence that answers a
question among retrieved passages, state it and cite it.

What it cannot teach: questions about facts without a value (who approves what, which tool to use), or that
need two sentences; its questions are echo questions, not the way people ask. A teacher (`qa`) writes
those.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

VALUE_LABELS = ("CARDINAL", "QUANTITY", "PERCENT", "MONEY", "DATE", "TIME")
_QUALIFIER = re.compile(r"^(?:(?:the|up to|about|over|under|at least|at most|around|more than|less than|within)\s+)+",
                        re.IGNORECASE)
_NUMBER_UNIT = re.compile(r"^[\d.,]+\s*(?:-\w+\s+)?([A-Za-z]+)")
_MARKUP = re.compile(r"[|`<>]|^\s*[#>*-]|\]\(|https?://")
_MONTH = re.compile(r"\b(?:January|February|March|April|May|June|July|August|September|October|November|December)\b")
MIN_WORDS = 5
MAX_CHARS = 400


@dataclass(frozen=True)
class Cloze:
    question: str
    answer: str  # the sentence
    value: str  # the value the question asks for (appears in the answer)


def _plural(unit: str) -> str:
    unit = unit.lower()
    return unit if unit.endswith("s") else unit + "s"


def question_phrase(label: str, value: str) -> str | None:
    """The words that ask for a value of this entity type ("how many days", "what percentage"), or None; a
    qualifier before the number stays ("under 6 hours" -> "under how many hours")."""
    if not any(ch.isdigit() for ch in value):
        return None
    kept = _QUALIFIER.match(value)
    if kept:
        rest = question_phrase(label, value[kept.end():])
        lead = kept.group(0) if not kept.group(0).lower().startswith("the ") else kept.group(0)[4:]
        return rest and f"{lead}{rest}"
    if label == "PERCENT":
        return "what percentage"
    if label == "MONEY":
        return "how much"
    if label in ("DATE", "TIME") and _MONTH.search(value):
        return "when"
    unit = _NUMBER_UNIT.match(value)
    if unit and unit.group(1).islower() and unit.group(1) not in ("and", "or", "to", "of", "a", "an", "the", "per"):
        return f"how many {_plural(unit.group(1))}"
    if label in ("CARDINAL", "QUANTITY") and _NUMBER_UNIT.fullmatch(value + " x"):
        return "how many"
    return None


def _identifier(doc, ent) -> bool:
    """A bare number after a noun names something ("topic 5", "clause 3", "version 2"); it is not a count."""
    return (ent.label_ == "CARDINAL" and ent.start > 0 and doc[ent.start - 1].pos_ in ("NOUN", "PROPN")
            and ent.text.replace(",", "").isdigit())


@lru_cache(maxsize=2)
def _nlp(spacy_model: str):
    from resources.redaction.engine import load_spacy_model

    return load_spacy_model(spacy_model, exclude=("lemmatizer",))


def cloze_questions(texts: Iterable[str], spacy_model: str, per_text: int) -> list[list[Cloze]]:
    """Up to `per_text` questions for each text (a passage without its heading), in sentence order."""
    out = []
    for doc in _nlp(spacy_model).pipe(list(texts), batch_size=32):
        found = []
        for sent in doc.sents:
            sentence = sent.text.strip()
            if (len(sentence.split()) < MIN_WORDS or len(sentence) > MAX_CHARS or _MARKUP.search(sentence)
                    or sentence[-1:] not in ".!;:"):
                continue
            for ent in sent.ents:
                phrase = question_phrase(ent.label_, ent.text) if ent.label_ in VALUE_LABELS else None
                if phrase is None or _identifier(doc, ent):
                    continue
                start, end = ent.start_char - sent.start_char, ent.end_char - sent.start_char
                stem = (sentence[:start] + phrase + sentence[end:]).strip().rstrip(".!;:").strip()
                stem = stem[0].upper() + stem[1:]
                found.append(Cloze(f"{stem}?", sentence, ent.text))
                if len(found) == per_text:
                    break
            if len(found) == per_text:
                break
        out.append(found)
    return out
