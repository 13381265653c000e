"""Text normalisation and Gopher/C4-style quality heuristics.

`clean_text` repairs a string (mojibake, unicode forms, control characters, boilerplate lines,
whitespace); `quality_issue` returns why a cleaned document should be dropped, or None.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache

import ftfy

DEFAULT_BOILERPLATE = (
    r"(?i)^sent from my \w+.*$",
    r"(?i)^(confidential|disclaimer)\b.*$",
    r"(?i)^.*\bunsubscribe\b.*$",
    r"(?i)^(get outlook for|this email (and any attachments )?(is|was)).*$",
)

_WORD = re.compile(r"\w[\w'’-]*", re.UNICODE)
# Prose punctuation; any other non-alphanumeric character counts as a symbol (#, $, @, *, emoji, ...).
_PROSE_PUNCT = set(".,;:!?'\"()[]-–—/%&’‘“”…<>_=+")


@dataclass(frozen=True)
class QualityRules:
    min_words: int = 3
    max_words: int | None = None  # no upper bound: long documents are split into passages, not dropped
    min_mean_word_length: float = 2.5
    max_mean_word_length: float = 12.0
    max_symbol_ratio: float = 0.2
    max_duplicate_line_fraction: float = 0.3
    min_alpha_word_fraction: float = 0.7
    languages: tuple[str, ...] = ("en",)
    min_language_confidence: float = 0.9
    boilerplate_patterns: tuple[str, ...] = field(default=DEFAULT_BOILERPLATE)


def clean_text(text: str, boilerplate: tuple[str, ...] = DEFAULT_BOILERPLATE) -> str:
    text = ftfy.fix_text(text, normalization="NFKC")
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf", "Co", "Cs"))
    patterns = _compiled(boilerplate)
    lines = []
    for line in text.splitlines():
        line = re.sub(r"[ \t\u00a0]+", " ", line).strip()
        if any(p.match(line) for p in patterns):
            continue
        lines.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


_TAG = re.compile(r"<[^>]{0,200}>")


def quality_issue(text: str, rules: QualityRules) -> tuple[str, str] | None:
    """(reason, detail) for a document that fails a heuristic, else None. Cheapest checks first."""
    words = _WORD.findall(text)
    if len(words) < rules.min_words:
        return "too_short", f"{len(words)} words < min_words={rules.min_words}"
    if rules.max_words is not None and len(words) > rules.max_words:
        return "too_long", f"{len(words)} words > max_words={rules.max_words}"

    visible = [ch for ch in text if not ch.isspace()]
    symbols = sum(1 for ch in visible if not ch.isalnum() and ch not in _PROSE_PUNCT)
    ratio = symbols / max(1, len(visible))
    if ratio > rules.max_symbol_ratio:
        return "symbol_ratio", f"symbol ratio {ratio:.2f} > {rules.max_symbol_ratio}"

    # lines that say something: markup alone (a table's "<td>✅</td>", "|---|", a code fence) repeats in any
    # well-formed document and is not counted
    lines = [ln.strip() for ln in text.splitlines() if len(_WORD.findall(_TAG.sub(" ", ln))) >= 3]
    if len(lines) > 1:
        duplicate = 1 - len(set(lines)) / len(lines)
        if duplicate > rules.max_duplicate_line_fraction:
            return "repeated_lines", f"{duplicate:.0%} of lines repeat > {rules.max_duplicate_line_fraction:.0%}"

    mean = sum(len(w) for w in words) / len(words)
    if not rules.min_mean_word_length <= mean <= rules.max_mean_word_length:
        return "mean_word_length", (
            f"mean word length {mean:.1f} outside [{rules.min_mean_word_length}, {rules.max_mean_word_length}]"
        )

    alpha = sum(1 for w in words if any(c.isalpha() for c in w)) / len(words)
    if alpha < rules.min_alpha_word_fraction:
        return "low_alpha_ratio", f"{alpha:.0%} of words contain letters < {rules.min_alpha_word_fraction:.0%}"

    if rules.languages:
        lang, confidence = _language_identifier().classify(text[:4000])
        if lang not in rules.languages and confidence >= rules.min_language_confidence:
            return "language", f"detected {lang} (p={confidence:.2f}); allowed: {', '.join(rules.languages)}"
    return None


@lru_cache(maxsize=8)
def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p) for p in patterns)


@lru_cache(maxsize=1)
def _language_identifier():
    """py3langid's bundled model: offline, ~100 languages, normalised probabilities."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
