"""The injection detector that generalises beyond patterns, measured on a labelled set kept in the tests
(tests/data/injection_labelled.jsonl): attacks by family and benign look-alikes, none of them in, or a near
duplicate of, the detector's reference corpus. Real MiniLM embeddings, real scikit-learn probe."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from resources.safety.injection import InjectionDetector, injection_findings, reference_corpus
from resources.safety.normalize import normalize

LABELLED = [json.loads(line) for line in (Path(__file__).parent / "data" / "injection_labelled.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def embed():
    from resources.retrieval.index import KnowledgeIndexer

    return KnowledgeIndexer().embed


def test_the_labelled_set_is_held_out_from_the_reference_corpus(embed):
    attacks, benign = reference_corpus()
    reference = attacks + benign
    items = [row["text"] for row in LABELLED]
    assert Counter(row["label"] for row in LABELLED)["attack"] >= 50 and Counter(row["label"] for row in LABELLED)["benign"] >= 50
    assert not {normalize(t) for t in items} & {normalize(t) for t in reference}
    similarity = embed([normalize(t) for t in items]) @ embed([normalize(t) for t in reference]).T
    assert float(similarity.max()) < 0.9  # no near-duplicate either


def test_the_detector_finds_attacks_the_patterns_miss_and_leaves_look_alikes(embed):
    detector = InjectionDetector(embed)
    flags = detector.flags([row["text"] for row in LABELLED])
    attacks = [f for f, row in zip(flags, LABELLED) if row["label"] == "attack"]
    benign = [f for f, row in zip(flags, LABELLED) if row["label"] == "benign"]
    rules = [bool(injection_findings(row["text"])) for row in LABELLED if row["label"] == "attack"]
    detection, false_refusals = np.mean(attacks), np.mean(benign)
    assert detection >= 0.9 and detection > np.mean(rules) + 0.5  # the patterns alone catch almost none of these
    assert false_refusals <= 0.05  # the targets: >= 90% detection, <= 5% false refusals (make bench too)
    by_family = {}
    for flag, row in zip(flags, LABELLED):
        if row["label"] == "attack":
            by_family.setdefault(row["family"], []).append(flag)
    assert all(np.mean(v) >= 0.6 for v in by_family.values()), by_family
