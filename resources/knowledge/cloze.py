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
_COUNTED_DAYS = re.compile(r"^[\d.,]+\s+(business|working|calendar|school)\s+(days?|hours?|weeks?)\b", re.IGNORECASE)
_TIME_UNIT = {"day", "days", "hour", "hours", "week", "weeks", "month", "months", "year", "years", "minute", "minutes"}
_MARKUP = re.compile(r"[|`<>]|^\s*[#>*-]|\]\(|https?://")
_MONTH = re.compile(r"\b(?:January|February|March|April|May|June|July|August|September|October|November|December)\b")
_CLAUSE_BREAK = re.compile(r"[,;:]\s+(?!\d)|\s[\u2013\u2014-]\s|\s\(|\)\s")  # a list of numbers is one value
_CONJUNCTION = re.compile(r"^(?:and|or|but|while|whereas|which|so)\s+", re.IGNORECASE)
MIN_WORDS = 5
MAX_CHARS = 400
MAX_ANSWER_CHARS = 160  # a longer sentence is answered by its clause that states the value


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
    counted = _COUNTED_DAYS.match(value)  # "10 business days": the kind of day stays in the question
    if counted:
        return f"how many {counted.group(1).lower()} {_plural(counted.group(2))}"
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


def _clause(sentence: str, start: int, end: int) -> tuple[int, int] | None:
    """The clause of `sentence` that holds the value at [start, end): between the nearest breaks (a comma,
    semicolon, colon, dash or bracket) outside the value; None when that is the whole sentence or too short to
    stand on its own."""
    before = [m.end() for m in _CLAUSE_BREAK.finditer(sentence) if m.end() <= start]
    after = [m.start() for m in _CLAUSE_BREAK.finditer(sentence) if m.start() >= end]
    left, right = (before[-1] if before else 0), (after[0] if after else len(sentence))
    conjunction = _CONJUNCTION.match(sentence[left:start])
    left += conjunction.end() if conjunction else 0
    if (left, right) == (0, len(sentence)) or len(sentence[left:right].split()) < MIN_WORDS:
        return None
    return left, right


def _capital(text: str) -> str:
    return text[0].upper() + text[1:]


def cloze_questions(texts: Iterable[str], spacy_model: str, per_text: int) -> list[list[Cloze]]:
    """Up to `per_text` values asked about in each text (a passage without its heading), in sentence order. Each
    value is asked twice where its sentence has clauses: with the whole sentence echoed, and with only the clause
    that holds it (shorter, nearer the way people ask, and the model learns to find the answer from a few of its
    words); a sentence over MAX_ANSWER_CHARS is answered by that clause, not copied whole."""
    out = []
    for doc in _nlp(spacy_model).pipe(list(texts), batch_size=32):
        found, values = [], 0
        for sent in doc.sents:
            sentence = sent.text.strip()
            if (len(sentence.split()) < MIN_WORDS or len(sentence) > MAX_CHARS or _MARKUP.search(sentence)
                    or sentence[-1:] not in ".!;:"):
                continue
            for ent in sent.ents:
                if ent.end < sent.end and doc[ent.end].lower_ in _TIME_UNIT and ent.label_ in VALUE_LABELS \
                        and doc[ent.end - 1].lower_ not in _TIME_UNIT:
                    ent = doc[ent.start : ent.end + 1]  # spaCy's "1 business" of "1 business day"
                    ent.label_ = "DATE"
                phrase = question_phrase(ent.label_, ent.text) if ent.label_ in VALUE_LABELS else None
                if phrase is None or _identifier(doc, ent):
                    continue
                start = ent.start_char - sent.start_char - (len(sent.text) - len(sent.text.lstrip()))
                end = start + len(ent.text)
                clause = _clause(sentence, start, end)
                answer = sentence
                if clause and len(sentence) > MAX_ANSWER_CHARS:
                    answer = _capital(sentence[clause[0] : clause[1]].strip().rstrip(".!;:,")) + "."
                stem = (sentence[:start] + phrase + sentence[end:]).strip().rstrip(".!;:").strip()
                found.append(Cloze(f"{_capital(stem)}?", answer, ent.text))
                if clause:
                    part = (sentence[clause[0] : start] + phrase + sentence[end : clause[1]]).strip().rstrip(".!;:,").strip()
                    found.append(Cloze(f"{_capital(part)}?", answer, ent.text))
                values += 1
                if values == per_text:
                    break
            if values == per_text:
                break
        out.append(found)
    return out
