"""What a text states: quantities with their units, ranges, times of day, dates, identifiers and names.

One reading of facts, shared by the evaluation (does an answer state a golden fact? does the passage it cites
hold it?) and the gateway's grounding check (is every number, date and name of an answer in a passage it
cites?), so that what is scored is what is served.

Quantities come from quantulum3 (units, number words, currencies, percentages): "14-day" and "14 days" are
both 14 days, "one hour" is 1 hour, "$8" is 8 dollars, "99.9%" is 99.9 percent (never 999). A number without
a unit is a *count* of the noun beside it ("3 boards", "HTTP 429", "iOS 16", "Python 3.11"): a fact that is a
count matches only the same number with the same noun — taken from the fact itself, else from the reference
sentence around it — or a bare number in an answer to a question that names that noun ("The maximum is 3."
answers "How many boards …?"). List numbering ("1. Open Settings") and citation markers ("[2]") state
nothing. Times of day (02:00, 2 pm), dates (31 March 2026, March 31, 2026-03-31), ranges ("5 to 10 business
days": both ends) and durations in other units (1 hour = 60 minutes) are compared by value. What is not a
number — "Retry-After", "AES-256", "Business" — is compared as words, case, hyphens and plurals aside.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from functools import lru_cache

# canonical unit -> (family, factor to the family's base): durations compare across units (1 hour = 60 minutes),
# sizes too (1 GB = 1000 MB); any other unit compares by its name
_SCALE = {
    "second": ("time", 1), "minute": ("time", 60), "hour": ("time", 3600), "day": ("time", 86400),
    "week": ("time", 604800), "month": ("month", 1), "year": ("month", 12),
    "byte": ("data", 1), "kilobyte": ("data", 1e3), "megabyte": ("data", 1e6), "gigabyte": ("data", 1e9),
    "terabyte": ("data", 1e12), "kibibyte": ("data", 1024), "mebibyte": ("data", 1024 ** 2),
    "gibibyte": ("data", 1024 ** 3),
}
_UNIT_ALIASES = {"minute of arc": "minute", "second of arc": "second", "dimensionless": None, "count": None,
                 "percentage": "percent", "pound sterling": "pound sterling"}
_COUNTED_DAYS = re.compile(r"\b(business|working|calendar|school)\s+(day|week|hour)s?\b", re.IGNORECASE)
_MONTHS = {m: i for i, m in enumerate(("january", "february", "march", "april", "may", "june", "july", "august",
                                       "september", "october", "november", "december"), start=1)}
_MONTH = r"(?P<month>January|February|March|April|May|June|July|August|September|October|November|December|" \
         r"Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)\.?"
_DATES = [
    re.compile(r"\b(?P<year>\d{4})-(?P<mon>0[1-9]|1[0-2])-(?P<day>0[1-9]|[12]\d|3[01])\b"),
    re.compile(r"\b(?P<day>[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?\s+(?:of\s+)?" + _MONTH + r"(?:,?\s+(?P<year>\d{4}))?\b",
               re.IGNORECASE),
    re.compile(r"\b" + _MONTH + r"\s+(?P<day>[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?\b(?:,?\s+(?P<year>\d{4}))?", re.IGNORECASE),
    re.compile(r"\b" + _MONTH + r"\s+(?P<year>\d{4})\b", re.IGNORECASE),
]
_TIME = re.compile(r"\b(?P<h>[01]?\d|2[0-3])(?::(?P<m>[0-5]\d))\s*(?P<ampm>[ap]\.?m\.?)?(?![\d:])|"
                   r"\b(?P<h12>1[0-2]|0?[1-9])\s*(?P<ampm12>[ap]\.?m\.?)(?=\W|$)", re.IGNORECASE)
# a token that mixes letters and digits, starting with a letter: a name, not a quantity (AES-256, QS-123, v1.2, IPv6)
_IDENTIFIER = re.compile(r"(?<![\w-])[A-Za-z][A-Za-z]*(?:[-_.]?[A-Za-z]*\d[\w]*)(?:[-_.][A-Za-z0-9]+)*(?![\w-])")
_CITATION = re.compile(r"\[\d{1,2}\](?:\s*\[\d{1,2}\])*")
_ENUMERATOR = re.compile(r"^[ \t]*\(?\d{1,2}[.)](?=[ \t]+\S)", re.MULTILINE)  # a line's "1. Open", "(2) Close", "3) Done"
PLACEHOLDER = re.compile(r"[<\[](?:[A-Z][A-Z_]{2,}[A-Z])(?:[_:][0-9a-f]{4,})?[>\]]")  # a redaction's <EMAIL_ADDRESS>
_WORD = re.compile(r"[A-Za-z][A-Za-z']*|\d+(?:[.,]\d+)*")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_STOP = frozenset("""a an the of to in on at for by per and or but nor with within from into than then as is are was
were be been being it its this that these those up over under about around after before each every any all no not
only just more less most least at least some other another your our their his her my you we they i he she which who
whom what when where why how s""".split())
STOP_WORDS = _STOP  # the words that say nothing of what a text is about
_NUMBER_WORD = re.compile(r"\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|"
                          r"fifty|sixty|hundred|thousand)\b", re.IGNORECASE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])|\n+")


@lru_cache(maxsize=1)
def _parser():
    """quantulum3's parser without its unit classifier: the classifier's pickle needs an older scikit-learn, and
    the rule-based disambiguation (by how common each unit is) reads the units of business text as well."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from quantulum3 import classifier, parser

        classifier.USE_CLF = False
    return parser


def _singular(word: str) -> str:
    word = word.lower().strip("'")
    if len(word) > 3 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


@dataclass(frozen=True)
class Claim:
    """One thing a text states. `kind`: quantity (a value with a unit), count (a number, with the noun beside it),
    range, time (minutes after midnight), date ((year, month, day), None where not given), term (a name or an
    identifier, normalised words)."""

    kind: str
    value: tuple
    surface: str
    start: int
    end: int
    noun: frozenset = frozenset()  # a count's nouns: the word after it and, for an identifier, the word before


def _unit(name: str | None, surface: str) -> tuple[str | None, float]:
    """(canonical unit or None for a count, factor to its family's base)."""
    if _COUNTED_DAYS.search(surface):
        name = _COUNTED_DAYS.search(surface).group(2).lower()
    name = _UNIT_ALIASES.get(name, name) if name else None
    if name is None:
        return None, 1.0
    family, factor = _SCALE.get(name, (name, 1.0))
    return family, float(factor)


def _blank(text: str, spans: list[tuple[int, int]]) -> str:
    chars = list(text)
    for start, end in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)


def _neighbours(text: str, start: int, end: int) -> frozenset:
    """The nouns of a count: the content word right after it and the word right before it (an identifier's name:
    "HTTP 429", "Python 3.11"), singular and lower case."""
    after = [w for w in _WORD.findall(text[end:end + 40])[:3] if not w[0].isdigit()]
    before = [w for w in _WORD.findall(text[max(0, start - 30):start])[-1:] if not w[0].isdigit()]
    nouns = set()
    for word in after[:2]:
        if word.lower() in _STOP:
            break
        nouns.add(_singular(word))
    nouns |= {_singular(w) for w in before if w.lower() not in _STOP}
    return frozenset(nouns)


@lru_cache(maxsize=4096)
def read(text: str) -> tuple[Claim, ...]:
    """Every claim of `text`, in order of position (citation markers, list numbering and redaction placeholders
    state nothing)."""
    found: list[Claim] = []
    spans = [m.span() for m in _CITATION.finditer(text)] + [m.span() for m in _ENUMERATOR.finditer(text)]
    spans += [m.span() for m in PLACEHOLDER.finditer(text)]
    work = _blank(text, spans)
    for pattern in _DATES:
        for m in pattern.finditer(work):
            parts = m.groupdict()
            month = int(parts["mon"]) if parts.get("mon") else _MONTHS.get(_month_name(parts.get("month") or ""))
            day = int(parts["day"]) if parts.get("day") else None
            year = int(parts["year"]) if parts.get("year") else None
            if month is None or (day is None and year is None):
                continue
            found.append(Claim("date", (year, month, day), m.group(0), *m.span()))
            work = _blank(work, [m.span()])
    for m in _TIME.finditer(work):
        hour = int(m.group("h") or m.group("h12"))
        minute = int(m.group("m") or 0)
        ampm = (m.group("ampm") or m.group("ampm12") or "").lower().replace(".", "")
        if ampm == "pm" and hour < 12:
            hour += 12
        elif ampm == "am" and hour == 12:
            hour = 0
        found.append(Claim("time", (hour * 60 + minute,), m.group(0), *m.span()))
    work = _blank(work, [(c.start, c.end) for c in found if c.kind == "time"])
    for m in _IDENTIFIER.finditer(work):
        found.append(Claim("term", (normal_words(m.group(0)),), m.group(0), *m.span()))
    work = _blank(work, [(c.start, c.end) for c in found if c.kind == "term"])
    found += _quantities(work, text)
    return tuple(sorted(found, key=lambda c: c.start))


def _month_name(name: str) -> str:
    name = name.lower().rstrip(".")
    return next((m for m in _MONTHS if m.startswith(name[:3])), name) if name else name


def _quantities(work: str, text: str) -> list[Claim]:
    if not _NUMBER.search(work) and not _NUMBER_WORD.search(work):
        return []
    out = []
    try:
        parsed = _parser().parse(work)
    except Exception:  # noqa: BLE001 - quantulum3 fails on some odd strings; its numbers are then read plainly
        parsed = []
    covered = []
    for q in parsed:
        start, end = q.span
        surface = work[start:end]
        if not any(ch.isdigit() for ch in surface) and not _NUMBER_WORD.search(surface):
            continue  # "a week", "an hour", "half": not a stated value
        tail = work[end:end + 30]
        counted = _COUNTED_DAYS.match(tail.lstrip())
        if counted and q.unit.name in ("dimensionless", "count"):  # "5 to 10 business days": quantulum stops at "business"
            end += len(tail) - len(tail.lstrip()) + counted.end()
            surface = work[start:end]
        unit, factor = _unit(q.unit.name, surface)
        numbers = [_number(n) for n in _NUMBER.findall(surface)]
        numbers = [n for n in numbers if n is not None]
        covered.append((start, end))
        if len(numbers) >= 2 and re.search(r"\d\s*(?:to|-|–|—|and)\s*\$?\d", surface):
            low, high = numbers[0], numbers[1]
            out.append(Claim("range", (low * factor, high * factor, unit), surface, start, end,
                             _neighbours(text, start, end) if unit is None else frozenset()))
            continue
        value = float(q.value)
        if unit is None:
            own = frozenset(_singular(w) for w in _WORD.findall(surface) if not w[0].isdigit() and w.lower() not in _STOP
                            and not _NUMBER_WORD.fullmatch(w))
            out.append(Claim("count", (value,), surface, start, end, own | _neighbours(text, start, end)))
        else:
            out.append(Claim("quantity", (round(value * factor, 6), unit), surface, start, end))
    for m in _NUMBER.finditer(_blank(work, covered)):  # what quantulum3 left: plain numbers
        value = _number(m.group(0))
        if value is not None:
            out.append(Claim("count", (value,), m.group(0), *m.span(), _neighbours(text, *m.span())))
    return out


def normal_words(text: str) -> str:
    """Lower case, hyphens, slashes and underscores as spaces, other punctuation dropped, plurals singular."""
    words = re.findall(r"[a-z0-9]+(?:\.[0-9]+)*", text.lower().replace("'s", ""))
    return " ".join(_singular(w) if w.isalpha() else w for w in words)


def _words(text: str) -> str:
    return f" {normal_words(_CITATION.sub(' ', text))} "


def _same(fact: Claim, said: Claim, nouns: frozenset, asked: frozenset, own: bool = True) -> bool:
    """Does `said` (a claim of the text) state `fact` (a claim of the fact)? `nouns`: what the fact counts (`own`:
    written in the fact itself, not read from the reference around it); `asked`: the words of the question (a bare
    number in the text counts what the question asks about)."""
    if fact.kind in ("date", "time", "term"):
        if fact.kind == "date" and said.kind == "date":
            return all(a is None or b is None or a == b for a, b in zip(fact.value, said.value)) and \
                fact.value[1] == said.value[1]
        return fact.kind == said.kind and fact.value == said.value
    if fact.kind == "range":
        return said.kind == "range" and fact.value == said.value
    if fact.kind == "quantity":
        return said.kind == "quantity" and fact.value == said.value
    # a count: the same number, counting the same thing
    if said.kind != "count" or said.value != fact.value:
        return False
    if not nouns:
        return True
    return bool(said.noun & nouns) or (not said.noun and (not own or bool(nouns & asked)))


def states(fact: str, text: str, question: str = "", reference: str = "") -> bool:
    """Does `text` state `fact` (a golden answer's must_include string)? Numbers by value and unit, a count with
    its noun (from the fact, else from `reference` around the fact, else — for a bare number in `text` — from
    `question`); the fact's words beside its numbers, and a fact without numbers, as normalised words."""
    found = read(fact)
    claims = [c for c in found if c.kind != "term"]
    if not claims:
        return f" {normal_words(fact)} " in _words(text) if normal_words(fact) else False
    terms = [c.value[0] for c in found if c.kind == "term"]
    words = normal_words(_blank(fact, [(c.start, c.end) for c in found]))
    said = read(text)
    asked = frozenset(_singular(w) for w in _WORD.findall(question) if w.lower() not in _STOP)
    for claim in claims:
        nouns = claim.noun or _reference_nouns(claim, reference)
        if not any(_same(claim, s, nouns, asked, own=bool(claim.noun)) for s in said):
            return False
    rest = [w for w in words.split() if w not in _STOP and not any(w in c.noun for c in claims)]
    return all(f" {w} " in _words(text) for w in [*terms, *rest])


def _reference_nouns(claim: Claim, reference: str) -> frozenset:
    """The nouns a bare number of a fact counts, read where the reference answer states that number."""
    for said in read(reference) if reference else ():
        if said.kind == claim.kind and said.value == claim.value and said.noun:
            return said.noun
    return frozenset()


def supported(claim: Claim, evidence: str) -> bool:
    """Is an answer's `claim` stated in `evidence` (the passages it cites, and the question)? A count is
    supported by the same number anywhere in the evidence (the passage may say "three attempts" where the answer
    says "3 times"), a quantity or range by the same value in any unit of its kind."""
    said = read(evidence)
    if claim.kind == "count":
        return any(s.kind in ("count", "quantity", "range") and claim.value[0] in _values(s) for s in said) or \
            f" {normal_words(claim.surface)} " in _words(evidence)
    if claim.kind == "quantity":
        return any(s.kind == "quantity" and s.value == claim.value for s in said) or \
            any(s.kind == "range" and s.value[2] == claim.value[1] and claim.value[0] in s.value[:2] for s in said)
    if claim.kind == "term":
        return f" {claim.value[0]} " in _words(evidence)
    return any(_same(claim, s, frozenset(), frozenset()) for s in said)


def _values(claim: Claim) -> tuple:
    if claim.kind == "range":
        return tuple(v for v in claim.value[:2])
    if claim.kind == "quantity":
        return (claim.value[0],)
    return claim.value


def names(text: str) -> list[str]:
    """Capitalised words that do not open a sentence (a person, a product, a plan, a setting): what a grounding
    check asks the cited passages to hold besides the numbers."""
    found = []
    for sentence in _SENTENCE.split(_CITATION.sub(" ", PLACEHOLDER.sub(" ", text))):
        words = re.findall(r"[A-Za-z][\w'-]*", sentence)
        found += [w for w in words[1:] if w[0].isupper() and w.lower() not in _STOP and w != "I"]
    return found


def placeholders(text: str) -> list[str]:
    """Redaction placeholders (`<EMAIL_ADDRESS>`, `[PERSON]`, `<PERSON_1a2b3c4d>`) in a text."""
    return PLACEHOLDER.findall(text)


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s and s.strip()]
