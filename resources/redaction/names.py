"""The name gazetteer the person rules read (no Presidio import here: the engine imports it before Presidio is
set up offline)."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def first_names() -> frozenset[str]:
    """Given names of many countries and cultures, case-folded: the dictionary of Jörg Michael's `gender.c` (about
    61,000 names from 54 countries) as the PyPI package gender-guesser ships it — another source than Faker, which
    makes the labelled test sets. Only the names are used, never the genders."""
    from gender_guesser.detector import Detector

    return frozenset(name.casefold() for name in Detector(case_sensitive=False).names)
