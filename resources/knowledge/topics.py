"""What a passage without a heading is about, so a document without headings still gives questions in proportion to
its passages ("What does the Apache License say about the Contributor?").

A passage's topic is its most salient noun phrase, read with spaCy's parser (the same installed English model the
redaction uses, never downloaded) over the passage's opening: the noun chunk whose head word the whole passage
repeats most, ties to the earliest;
determiners and possessives before it are dropped ("each Contributor" -> "Contributor"), pronouns, numbers,
redaction placeholders and phrases over five words are never topics. The sentence that first names the topic
(and the next while the answer is still short) is what the example answers with.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

MAX_TOPIC_WORDS = 5
OPENING_CHARS = 400  # the parser reads a passage's opening; the whole passage counts how often a word comes back
_DROP_FIRST = frozenset("a an the this that these those each every any all some such its their his her our your my "
                        "no other another".split())


@lru_cache(maxsize=1)
def _nlp():
    from resources.redaction.engine import DEFAULT_SPACY_MODEL, load_spacy_model

    return load_spacy_model(DEFAULT_SPACY_MODEL, exclude=("ner",))


def topics(passages: list[str]) -> list[tuple[str, str] | None]:
    """Per passage: (topic, the sentence that first names it), or None when it has no noun phrase to ask about."""
    from resources.knowledge.claims import PLACEHOLDER

    out: list[tuple[str, str] | None] = []
    for passage, doc in zip(passages, _nlp().pipe((p[:OPENING_CHARS] for p in passages), batch_size=32)):
        words = Counter(w.lower() for w in re.findall(r"[A-Za-z]+", passage))
        heads = Counter({t.lemma_.lower(): words[t.lower_] + words[t.lemma_.lower()] for t in doc
                         if t.pos_ in ("NOUN", "PROPN") and t.is_alpha})
        best, score = None, 0
        for chunk in doc.noun_chunks:
            kept = [t for t in chunk if not (t.i == chunk.start and t.lower_ in _DROP_FIRST) and t.dep_ != "poss"
                    and t.tag_ != "POS"]
            while kept and (kept[0].lower_ in _DROP_FIRST or kept[0].is_punct):
                kept = kept[1:]
            if not kept or chunk.root.pos_ not in ("NOUN", "PROPN") or len(kept) > MAX_TOPIC_WORDS:
                continue
            phrase = doc[kept[0].i : kept[-1].i + 1].text.strip().strip("\"'“”‘’")
            if phrase.count('"') % 2 or phrase.count("(") != phrase.count(")"):
                continue
            if not re.search(r"[A-Za-z]{3}", phrase) or PLACEHOLDER.search(phrase) or "\n" in phrase:
                continue
            repeated = heads[chunk.root.lemma_.lower()]
            if repeated > score:
                best, score = (phrase, chunk.sent.text.strip()), repeated
        out.append(best)
    return out
