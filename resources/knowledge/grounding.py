"""The grounding check: is every number, date, quantity and name of an answer in a passage the answer cites?

The gateway runs it on every grounded answer before the output guard, and the evaluation runs the same function
on the answers of its "as served" rows, so the table scores what a client receives. An answer cites passages
inline as `[n]` (n counts the passages of its grounded prompt, `resources.knowledge.prompt`); the claims of the
answer (`resources.knowledge.claims`: quantities with units, counts, ranges, times, dates, identifiers, and
capitalised names that do not open a sentence) must each be stated by a cited passage — or by the question,
which the client wrote. An answer that cites nothing is checked against every passage of its prompt. A
redaction placeholder (`<EMAIL_ADDRESS>`) copied from a passage is never content: it fails the check.

An answer whose every claim stands in a passage can still answer another question: a small model copies a true
sentence of the wrong passage ("Each user can have up to 10 active API tokens" to "What is the request limit per
minute?"). Such an answer is `off_topic` when neither it nor the passage sentence it repeats shares as many of the
question's words as the passages' sentence closest to the question does (a question quoted in a passage, as
support tickets do, is no such sentence), less `RELEVANCE_MARGIN` (1, chosen on the sample golden sets' dev
splits). It gets the same action as an unsupported one.

What an answer that fails gets is the model's `grounding` action: `abstain` (the model's abstention sentence),
`quote` (the sentence of the passages that shares most words with the question, cited), `flag` (served as it
is, the failure reported in the response) or `off` (no check). Before any of it, a request whose best passage
scores below the model's retrieval threshold is answered with the abstention sentence without generating:
`confident`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from resources.knowledge.claims import normal_words, names, placeholders, read, sentences, supported
from resources.knowledge.prompt import passage_heading, passage_text

GroundingAction = Literal["abstain", "quote", "flag", "off"]
CITATION = re.compile(r"\[(\d{1,2})\]")
RELEVANCE_MARGIN = 1
_ASKING = frozenset("do doe does did can could much many long often".split())  # how a question asks, not what about
ABSTENTION_WORDS = re.compile(
    r"(passages?|documents?|context|sources?|information)\s+(i have\s+)?(do|does|did)\s+not\s+(answer|say|mention|cover|"
    r"contain|state|include)|\b(i do not|i don't) know\b|\bno information (about|on)\b|\bnot (able|possible) to "
    r"answer\b|\bcannot (find|answer)\b|\bnot (mentioned|covered|stated) in\b", re.IGNORECASE)


@dataclass
class Checked:
    """What the grounding check made of one answer."""

    text: str  # what is served
    verdict: str  # grounded | recited (its citations corrected) | unsupported | off_topic | abstained | low_retrieval | no_passages | unchecked
    action: str | None = None  # what was done to an unsupported answer: abstain | quote | flag
    cited: list[int] = field(default_factory=list)  # passage numbers (1-based) the served text cites
    unsupported: list[str] = field(default_factory=list)  # the claims no cited passage holds, as written
    invalid_citations: int = 0  # [n] markers naming no passage of the prompt (removed from the text)
    spans: dict[int, str] = field(default_factory=dict)  # passage number -> the sentence that supports the answer

    def citations(self, passages: list[dict[str, Any]], describe) -> list[dict[str, Any]]:
        """The passages the served text cites, in citation order, each as `describe(passage)` with its number and
        supporting sentence: what `tuneforge.citations` lists."""
        return [{"n": n, **describe(passages[n - 1]), "span": self.spans.get(n)} for n in self.cited]


def is_abstention(answer: str, abstention: str) -> bool:
    """Does the answer decline (the model's abstention sentence, or words to that effect)?"""
    said, sentence = normal_words(answer), normal_words(abstention)
    return bool(said) and (bool(sentence) and sentence in said or bool(ABSTENTION_WORDS.search(answer)))


def retrieval_query(question: str) -> str:
    """What retrieval searches with for a question: the question without redaction placeholders ("Hi, I'm <PERSON>
    (<EMAIL_ADDRESS>). How long ..."), which say nothing about the topic and pull the embedding away from it."""
    return " ".join(re.sub(r"\(\s*\)|\[\s*\]", " ", placeholders_removed(question)).split()) or question


def placeholders_removed(text: str) -> str:
    from resources.knowledge.claims import PLACEHOLDER

    return PLACEHOLDER.sub(" ", text)


def confident(passages: list[dict[str, Any]], threshold: float | None) -> bool:
    """Retrieval is confident enough to answer: no threshold, or the best passage's score reaches it."""
    if threshold is None:
        return True
    return bool(passages) and max(float(p.get("score") or 0.0) for p in passages) >= threshold


def _evidence(passage: dict[str, Any]) -> str:
    return f"{passage_heading(passage)}\n{passage_text(passage)}"


def _claims(answer: str) -> list[tuple[str, Any]]:
    """(as written, claim or name) for everything the answer states that a passage must hold."""
    found: list[tuple[str, Any]] = [(c.surface, c) for c in read(answer)]
    found += [(n, None) for n in names(answer)]
    return found


def _holds(claim, surface: str, evidence: str) -> bool:
    if claim is not None:
        return supported(claim, evidence)
    return f" {normal_words(surface)} " in f" {normal_words(evidence)} "


def _asks(sentence: str) -> bool:
    return sentence.rstrip().endswith("?")


def _topic(text: str) -> set[str]:
    """The words of `text` that say what it is about: no stop words, numbers, citations or placeholders."""
    from resources.knowledge.claims import PLACEHOLDER, STOP_WORDS

    plain = PLACEHOLDER.sub(" ", CITATION.sub(" ", text))
    return {w for w in normal_words(plain).split() if w not in STOP_WORDS and w not in _ASKING and not w[0].isdigit()}


def off_topic(answer: str, passages: list[dict[str, Any]], question: str, margin: int = RELEVANCE_MARGIN) -> bool:
    """Does the answer address another sentence of the passages than the one the question asks about? (The
    question's words shared by the answer, or by the passage sentence the answer repeats, fall more than `margin`
    short of those shared by the passages' sentence closest to the question.)"""
    wanted = _topic(question)
    if not wanted or not passages:
        return False
    said = _topic(answer)
    best = repeated = 0
    closest = -1
    for sentence in (s for p in passages for s in sentences(passage_text(p))):
        words = _topic(sentence)
        if not _asks(sentence):  # a question quoted in a passage (a ticket) answers nothing
            best = max(best, len(wanted & words))
        shared = len(said & words)
        if shared > closest:  # the sentence the answer repeats: most words in common with it
            closest, repeated = shared, len(wanted & words)
    return max(len(wanted & said), repeated) + margin < best


def _best_sentence(passage_texts: list[str], answer_or_question: str) -> tuple[int, str] | None:
    """(passage index, sentence) sharing the most content words with `answer_or_question`; a question quoted in a
    passage (a ticket's) neither answers nor supports anything."""
    wanted = set(normal_words(answer_or_question).split())
    best, score = None, 0
    for i, text in enumerate(passage_texts):
        for sentence in sentences(text):
            if _asks(sentence):
                continue
            overlap = len(wanted & set(normal_words(sentence).split()))
            if overlap > score:
                best, score = (i, sentence), overlap
    return best


def check_answer(answer: str, passages: list[dict[str, Any]], question: str, action: GroundingAction,
                 abstention: str) -> Checked:
    """The grounding check on one answer to `question` given `passages` (its grounded prompt's, in order)."""
    if action == "off":
        return Checked(answer, "unchecked", cited=_cited(answer, len(passages)))
    if is_abstention(answer, abstention):
        return Checked(answer, "abstained")
    if not passages:
        return Checked(answer, "no_passages")
    markers = [int(n) for n in CITATION.findall(answer)]
    invalid = sum(not 1 <= n <= len(passages) for n in markers)
    text = re.sub(r"(\[\d{1,2}\])(?:\s*\1)+", r"\1", answer)  # "[1] [1] [1]": one citation
    if invalid:  # a marker naming no passage is dropped, with the space before it
        text = re.sub(r"\s*\[(\d{1,2})\]", lambda m: m.group(0) if 1 <= int(m.group(1)) <= len(passages) else "", text).strip()
    cited = _cited(text, len(passages))
    sources = [passages[n - 1] for n in cited] if cited else passages
    evidence = "\n".join([question] + [_evidence(p) for p in sources])
    claims = _claims(text)
    missing = [surface for surface, claim in claims if not _holds(claim, surface, evidence)]
    missing += placeholders(text)
    spans = _spans(text, passages, cited)
    verdict = "unsupported"
    if not missing:
        if not off_topic(text, passages, question):
            return Checked(text, "grounded", cited=cited, invalid_citations=invalid, spans=spans)
        verdict = "off_topic"
    else:
        recited = _recite(text, claims, passages, question) if cited and not placeholders(text) else None
        if recited is not None:  # every claim stands in the prompt's passages, only not in the one it cites: cite those
            numbers = _cited(recited, len(passages))
            if not off_topic(recited, passages, question):
                return Checked(recited, "recited", cited=numbers, invalid_citations=invalid,
                               spans=_spans(recited, passages, numbers))
            text, cited, spans, missing, verdict = recited, numbers, _spans(recited, passages, numbers), [], "off_topic"
    if action == "flag":
        return Checked(text, verdict, "flag", cited, missing, invalid, spans)
    if action == "quote":
        best = _best_sentence([passage_text(p) for p in passages], question)
        if best is not None and not placeholders(best[1]):
            n = best[0] + 1
            return Checked(f"{best[1].rstrip()} [{n}]", verdict, "quote", [n], missing, invalid, {n: best[1]})
    return Checked(abstention, verdict, "abstain", [], missing, invalid)


def _recite(text: str, claims, passages: list[dict[str, Any]], question: str) -> str | None:
    """The answer with its citations replaced by the passages that hold its claims (fewest first, in prompt order),
    when every claim stands in some passage of the prompt; else None."""
    holders = []
    for surface, claim in claims:
        found = [n for n, p in enumerate(passages, start=1) if _holds(claim, surface, f"{question}\n{_evidence(p)}")]
        if not found:
            return None
        holders.append(found)
    chosen: list[int] = []
    for found in sorted(holders, key=len):  # a passage already chosen covers a claim it holds
        if not set(found) & set(chosen):
            chosen.append(found[0])
    plain = CITATION.sub("", text).rstrip()
    plain = re.sub(r"\s+([.,;:!?])", r"\1", plain)
    return plain + " " + " ".join(f"[{n}]" for n in sorted(chosen)) if chosen else plain


def _cited(text: str, count: int) -> list[int]:
    return list(dict.fromkeys(int(n) for n in CITATION.findall(text) if 1 <= int(n) <= count))


def _spans(answer: str, passages: list[dict[str, Any]], cited: list[int]) -> dict[int, str]:
    """Per cited passage, its sentence that shares most words with the answer (what supports it)."""
    spans = {}
    plain = CITATION.sub(" ", answer)
    for n in cited:
        best = _best_sentence([passage_text(passages[n - 1])], plain)
        if best is not None:
            spans[n] = best[1]
    return spans
