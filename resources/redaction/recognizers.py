"""Recognizers for PII and secrets that enterprise data holds and Presidio does not find by default."""

from __future__ import annotations

from functools import lru_cache

import regex
from presidio_analyzer import AnalysisExplanation, EntityRecognizer, Pattern, PatternRecognizer, RecognizerResult
from presidio_analyzer.predefined_recognizers import CreditCardRecognizer, PhoneRecognizer

from resources.redaction.names import first_names, fold
from resources.redaction.policy import CustomPattern


class ApiKeyRecognizer(PatternRecognizer):
    """Provider-format API keys and access tokens (Presidio ships no recognizer for them); passwords, private keys and
    `key = value` secrets are `SecretsRecognizer`'s (resources/redaction/secrets.py)."""

    PATTERNS = [
        # provider-prefixed keys: Stripe-style sk_live_/pk_test_, our own qs_live_, OpenAI sk-...
        Pattern("prefixed key", r"\b(?:sk|pk|rk|qs)[-_](?:live|test|prod)[-_][A-Za-z0-9]{16,}\b", 0.9),
        Pattern("openai-style key", r"\bsk-[A-Za-z0-9_-]{20,}\b", 0.85),
        Pattern("aws access key id", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", 0.9),
        Pattern("github token", r"\bgh[pousr]_[A-Za-z0-9]{36,}\b", 0.95),
        Pattern("slack token", r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b", 0.95),
        Pattern("google api key", r"\bAIza[0-9A-Za-z_-]{35}\b", 0.9),
        Pattern("jwt", r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\b", 0.85),
    ]
    CONTEXT = ["key", "token", "secret", "api", "credential", "password"]

    def __init__(self, supported_language: str = "en"):
        super().__init__(
            supported_entity="API_KEY",
            patterns=self.PATTERNS,
            context=self.CONTEXT,
            supported_language=supported_language,
            name="ApiKeyRecognizer",
        )


class IntroducedNameRecognizer(PatternRecognizer):
    """Capitalised names right after a self-introduction or sign-off ("This is Tiffany Logan",
    "Regards, Ana Ruiz"): spaCy's small English model misses some, and support data is full of them.
    Presidio compiles patterns case-insensitively, so the name part turns that off (`(?-i:...)`)."""

    PATTERNS = [
        Pattern(
            "introduced name",
            r"(?<=\b(?:[Tt]his is|[Mm]y name is|[Nn]ame:|I am|I'm|[Rr]egards,|[Tt]hanks,|[Cc]heers,|[Ss]igned,|"
            r"[Cc]ontact|[Aa]sk for|[Ss]poke (?:to|with))\s{1,3})(?-i:[A-Z][a-z]+(?:[ -][A-Z][a-z'’]+){1,2})\b",
            0.6,
        )
    ]

    def __init__(self, supported_language: str = "en"):
        super().__init__(
            supported_entity="PERSON", patterns=self.PATTERNS, supported_language=supported_language,
            name="IntroducedNameRecognizer",
        )


class StreetAddressRecognizer(PatternRecognizer):
    """Street addresses: a house number, one to three capitalised words and a street type ("221 Baker Street",
    "1600 Amphitheatre Pkwy, Suite 4"), or a street type first as some countries write it ("Calle Mayor 12");
    Presidio has no recognizer for them and spaCy's LOC/GPE tags only cities and countries."""

    STREET_TYPES = (r"Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|"
                    r"Close|Square|Sq|Parkway|Pkwy|Highway|Hwy|Crescent|Cres|Row|Grove|Gardens|Mews|Hill|Rise|Walk|"
                    r"Parade|Esplanade|Circuit|Line|Isle|Amble|Vale|Green|Park|Wharf|Quay|Alley|Loop|Trail|Strasse|"
                    r"Straße|Weg|Allee")
    PATTERNS = [
        Pattern("number first",
                rf"\b\d{{1,5}}[A-Za-z]?\s+(?-i:(?:[A-Z][\w'’.-]+\s+){{1,3}}(?:{STREET_TYPES}))\b\.?"
                r"(?:,?\s+(?:Apt|Apartment|Suite|Unit|Flat|Floor)\.?\s*#?\w{1,5})?", 0.6),
        Pattern("street first",
                r"\b(?-i:(?:Calle|Rue|Via|Avenida|Rua|Carrer|Viale|Corso|Piazza)\s+(?:[A-Za-z][\w'’.-]+\s+){1,3})\d{1,5}\b", 0.6),
    ]
    CONTEXT = ["address", "street", "live", "lives", "ship", "deliver", "mail", "office", "located"]

    def __init__(self, supported_language: str = "en"):
        super().__init__(supported_entity="STREET_ADDRESS", patterns=self.PATTERNS, context=self.CONTEXT,
                         supported_language=supported_language, name="StreetAddressRecognizer")


class DateOfBirthRecognizer(PatternRecognizer):
    """A date right after a birth word ("born on 4 March 1987", "DOB: 1987-03-04", "date of birth 03/04/1987"):
    the date alone is not personal data (a release date, a deadline), next to a birth word it is."""

    MONTHS = r"Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?"
    DATE = (rf"(?:\d{{4}}-\d{{1,2}}-\d{{1,2}}|\d{{1,2}}[/.-]\d{{1,2}}[/.-]\d{{2,4}}|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:{MONTHS})\.?,?\s+\d{{4}}"
            rf"|(?:{MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}})")
    PATTERNS = [Pattern("date of birth",
                        rf"(?<=\b(?:born(?:\s+on)?|dob|d\.o\.b\.?|date\s+of\s+birth|birth\s*date|birthday(?:\s+is)?)\s*[:=-]?\s*){DATE}",
                        0.85)]

    def __init__(self, supported_language: str = "en"):
        super().__init__(supported_entity="DATE_OF_BIRTH", patterns=self.PATTERNS, supported_language=supported_language,
                         name="DateOfBirthRecognizer")


class ContextIbanRecognizer(PatternRecognizer):
    """An IBAN-shaped value right after the word IBAN: Presidio's own recognizer also checks the checksum and the
    country's length, so a mistyped IBAN (still someone's account, one digit off) passes it; next to the word it
    is redacted all the same."""

    PATTERNS = [Pattern("iban after the word", r"(?<=\bIBAN[:\s]{1,3})(?-i:[A-Z]{2}\d{2}(?: ?[A-Z0-9]){10,30})\b", 0.7)]

    def __init__(self, supported_language: str = "en"):
        super().__init__(supported_entity="IBAN_CODE", patterns=self.PATTERNS, supported_language=supported_language,
                         name="ContextIbanRecognizer")


class MastercardSeries2Recognizer(CreditCardRecognizer):
    """Mastercard's 2-series range (2221-2720), which Presidio's card regex misses; Luhn-validated."""

    PATTERNS = [
        Pattern(
            "Mastercard 2-series",
            r"\b(?:222[1-9]|22[3-9]\d|2[3-6]\d{2}|27[01]\d|2720)[- ]?\d{4}[- ]?\d{4}[- ]?\d{4}\b",
            0.5,
        )
    ]

    def __init__(self, supported_language: str = "en"):
        super().__init__(
            patterns=self.PATTERNS, supported_language=supported_language, name="MastercardSeries2Recognizer"
        )


def custom_pattern_recognizer(spec: CustomPattern, language: str) -> PatternRecognizer:
    return PatternRecognizer(
        supported_entity=spec.entity,
        patterns=[Pattern(f"{spec.entity} pattern", spec.regex, spec.score)],
        context=spec.context or None,
        supported_language=language,
        name=f"Custom{spec.entity.title().replace('_', '')}Recognizer",
    )


class DigitGatedPhoneRecognizer(PhoneRecognizer):
    """Presidio's phone recognizer (libphonenumber), skipped for texts with fewer digits than the
    shortest phone number (most support text has none), and run on the runs of digits only: the matcher scans
    its text once per region and is the slowest recognizer."""

    MIN_DIGITS = 7
    # libphonenumber's national formats of these regions (Presidio's default is US, GB, DE, FR, IL, IN, CA, BR):
    # the regions a European or Asia-Pacific company's customers and staff call from
    REGIONS = ("US", "GB", "DE", "FR", "IL", "IN", "CA", "BR", "AU", "IE", "ES", "IT", "NL", "PL", "SE", "TR", "MX", "JP",
               "CN", "ID", "CH", "AT", "BE", "PT", "NZ", "SG")

    def __init__(self, supported_language: str = "en"):
        super().__init__(supported_language=supported_language, supported_regions=self.REGIONS)

    # a run of digits and the separators phone numbers are written with: libphonenumber reads only these runs
    # (and a few characters around them), not the whole text once per region
    CANDIDATE = regex.compile(r"\+?\(?\d[\d \t().\-/]{3,}\d(?:[ \t]*(?:x|ext\.?|extension)[ \t]*\d{1,6})?", regex.IGNORECASE)
    MIN_RUN_DIGITS = 5  # short national numbers ("376763") stand in a text with other digits
    MARGIN = 3

    def analyze(self, text, entities, nlp_artifacts=None):  # noqa: D102
        if sum(ch.isdigit() for ch in text) < self.MIN_DIGITS:
            return []
        results = []
        for run in self.CANDIDATE.finditer(text):
            if sum(ch.isdigit() for ch in run.group()) < self.MIN_RUN_DIGITS:
                continue
            lo, hi = max(0, run.start() - self.MARGIN), min(len(text), run.end() + self.MARGIN)
            for found in super().analyze(text[lo:hi], entities, nlp_artifacts):
                found.start, found.end = found.start + lo, found.end + lo
                results.append(found)
        return EntityRecognizer.remove_duplicates(results)


@lru_cache(maxsize=1)
def _stop_words() -> frozenset[str]:
    from spacy.lang.en.stop_words import STOP_WORDS

    return frozenset(STOP_WORDS)


@lru_cache(maxsize=65536)
def _zipf(word: str) -> float:
    """How common a word is in English (wordfreq's Zipf scale: 0 unknown, 3 once per million words, 7 "the"); a
    hyphenated word is as common as its most common part."""
    from wordfreq import zipf_frequency

    return max((zipf_frequency(part, "en") for part in word.split("-") if part), default=0.0)


class GazetteerNameRecognizer(EntityRecognizer):
    """A known given name followed by one or two capitalised name words — surname particles ("de la", "van der")
    and hyphens allowed — is a person ("Ewelina Zbroja", "Christa-Maria Trommler", "Hans-H. Kraushaar"), and so
    are two or three such words that English rarely uses ("Teber Sezgin"); so are two lower-case words after a
    self-introduction when the first is a given name or both are rare ("this is paulette maillot"). In a text
    written at least a third in Latin letters, a run of one to four words in a script without letter case (Devanagari,
    Arabic, Han, ...) is read as a name ("approved by सुभाष तमांग"): nothing else marks one there.
    spaCy's small model misses many names that are not English; this reads the names themselves. A word the policy
    allows or an acronym is never part of a name, nor is a stop word."""

    # a capitalised word, inner capitals allowed ("McDonald", "O'Brien", "DeShawn"), a hyphenated part ("Hans-H.")
    NAME = r"\p{Lu}['’]?\p{Lu}?[\p{Ll}\p{Lm}'’]+(?:\p{Lu}[\p{Ll}\p{Lm}'’]+)?(?:-\p{Lu}[\p{Ll}'’]*\.?)?"
    PARTICLE = (r"(?:de|da|del|della|dei|di|do|dos|das|du|la|le|van|von|der|den|ter|ten|bin|binti|al|el|ibn|y|zu|"
                r"Ó|Ní|Nic|Mac|Mc|Ua|Mhic|Bin|Al|El|Abu|ap)")
    FULL = regex.compile(rf"(?<![\w@.'’-])({NAME})((?:[ \t]+(?:{PARTICLE}[ \t]+)*{NAME}){{1,3}})(?![\w@'’-])")
    INTRODUCED = regex.compile(r"(?i:\b(?:this is|my name is|i am|i'm|name:|regards,|thanks,|cheers,))[ \t]+"
                               r"(\p{Ll}[\p{Ll}'’-]+)[ \t]+(\p{Ll}[\p{Ll}'’-]+)\b")
    SCORE = 0.7
    # scripts without letter case, where no capital marks a name: a short run of them inside Latin-script text
    CASELESS = (r"[\p{Devanagari}\p{Bengali}\p{Gurmukhi}\p{Gujarati}\p{Oriya}\p{Tamil}\p{Telugu}\p{Kannada}"
                r"\p{Malayalam}\p{Sinhala}\p{Arabic}\p{Hebrew}\p{Thai}\p{Han}\p{Hangul}\p{Hiragana}\p{Katakana}]")
    FOREIGN = regex.compile(rf"(?<![\p{{L}}\p{{M}}])({CASELESS}[\p{{L}}\p{{M}}]*(?:[ \t]+{CASELESS}[\p{{L}}\p{{M}}]*){{0,3}})"
                            rf"(?![\p{{L}}\p{{M}}])")
    RARE_FIRST, RARE_LAST = 3.5, 3.6  # Zipf frequency in English (wordfreq): below it, a word is rare

    def __init__(self, supported_language: str = "en", not_names: frozenset[str] = frozenset(),
                 acronyms: frozenset[str] = frozenset()):
        self.not_names = not_names  # case-folded words that are never part of a name (the policy's allow list)
        self.acronyms = acronyms  # words that are not names when written in capitals ("NA", "SSO")
        super().__init__(supported_entities=["PERSON"], supported_language=supported_language,
                         name="GazetteerNameRecognizer")

    def load(self) -> None:
        first_names()

    def _word_ok(self, word: str) -> bool:
        folded = word.casefold().rstrip(".")
        return folded not in _stop_words() and folded not in self.not_names and not (word.isupper() and word in self.acronyms)

    def analyze(self, text: str, entities: list[str], nlp_artifacts=None) -> list[RecognizerResult]:
        if "PERSON" not in entities:
            return []
        names, found = first_names(), []
        for m in self.FULL.finditer(text, overlapped=True):  # "Dear Ewelina Zbroja": a match from each word
            first = fold(m.group(1).split("-")[0])
            rest = regex.findall(self.NAME, m.group(2))
            # a given name that is also an English word ("Per", "Will") only before a surname English rarely uses
            known = first in names and (self._word_ok(m.group(1)) or self._rare_name("", rest))
            if (known or self._rare_name(m.group(1), rest) and self._word_ok(m.group(1))) \
                    and all(self._word_ok(w) for w in rest):
                found.append(self._result(m.start(), m.end()))
        if self.FOREIGN.search(text) and 3 * len(regex.findall(r"\p{Latin}", text)) > len(regex.findall(r"\p{L}", text)):
            found += [self._result(m.start(1), m.end(1)) for m in self.FOREIGN.finditer(text)]
        for m in self.INTRODUCED.finditer(text):
            if (fold(m.group(1)) in names or self._rare_name(m.group(1), [m.group(2)])) \
                    and self._word_ok(m.group(1)) and self._word_ok(m.group(2)):
                found.append(self._result(m.start(1), m.end(2)))
        return found

    def _rare_name(self, first: str, rest: list[str]) -> bool:
        """Two or three name words none of which English uses much ("Teber Sezgin", "Anvi Rana"): a given name
        the dictionary lacks, followed by a surname. Word frequencies from wordfreq (offline, in the package)."""
        return _zipf(first) < self.RARE_FIRST and all(_zipf(w) < self.RARE_LAST for w in rest)

    def _result(self, start: int, end: int) -> RecognizerResult:
        return RecognizerResult("PERSON", start, end, self.SCORE,
                                analysis_explanation=AnalysisExplanation(self.name, self.SCORE, textual_explanation=
                                                                         "a known given name followed by name words"),
                                recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                                                      RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id})


class LooseIbanRecognizer(PatternRecognizer):
    """An IBAN-shaped value anywhere — a country code, two check digits, 11 to 30 letters and digits with at least
    ten digits among them — whether or not its checksum and length hold: a mistyped or made-up IBAN in a payroll
    note is still someone's account number. Presidio's own recognizer (checksum-validated) scores higher."""

    PATTERNS = [Pattern("iban-shaped", r"\b(?-i:[A-Z]{2}\d{2}(?=(?:[A-Z]*\d){10})[A-Z0-9]{11,30})\b", 0.6)]

    def __init__(self, supported_language: str = "en"):
        super().__init__(supported_entity="IBAN_CODE", patterns=self.PATTERNS, supported_language=supported_language,
                         name="LooseIbanRecognizer")
