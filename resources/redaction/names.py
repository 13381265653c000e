"""The name gazetteer the person rules read (no Presidio import here: the engine imports it before Presidio is
set up offline)."""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from pathlib import Path


def fold(word: str) -> str:
    """Case and accents folded ("Eugène" -> "eugene"), as the gazetteer is looked up."""
    return "".join(ch for ch in unicodedata.normalize("NFKD", word.casefold()) if not unicodedata.combining(ch))


@lru_cache(maxsize=1)
def first_names() -> frozenset[str]:
    """Given names, folded: the 5,163 given names of the US Census Bureau's 1990 name files (public domain), as the
    PyPI package `names` (MIT) ships them — another source than Faker, which makes the labelled test sets. Names
    English also uses as words ("Will", "May") are judged with their context by the recognizer."""
    import names

    folder = Path(names.__file__).parent
    found = set()
    for file in ("dist.male.first", "dist.female.first"):
        for line in (folder / file).read_text(encoding="ascii").splitlines():
            if line.strip():
                found.add(fold(line.split()[0]))
    return frozenset(found)


@lru_cache(maxsize=1)
def common_surnames(top: int = 5000) -> frozenset[str]:
    """The `top` most frequent surnames of the same Census files ("Park", "Young", "White"), folded."""
    import names

    lines = (Path(names.__file__).parent / "dist.all.last").read_text(encoding="ascii").splitlines()
    return frozenset(fold(line.split()[0]) for line in lines[:top] if line.strip())
