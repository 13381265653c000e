"""Datasets: hashed splits, the plain-text strategy, golden files and the contamination guard."""

import json

import pytest

from resources.datasets.builder import SplitRules, build_examples, read_golden_file
from resources.datasets.policy import DatasetPolicy


def chat(doc_id, prompt, answer, kind="instruction"):
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return {"doc_id": doc_id, "kind": kind, "title": None, "text": f"{prompt}\n\n{answer}",
            "messages": json.dumps(messages), "batch": "b", "external_id": None}


def test_splits_are_deterministic_and_close_to_the_fractions():
    rules = SplitRules(validation_fraction=0.2, golden_holdout_fraction=0.1)
    ids = [f"doc-{i}" for i in range(4000)]
    splits = [rules.split_of(i) for i in ids]
    assert splits == [rules.split_of(i) for i in ids]
    assert 0.17 < splits.count("validation") / len(ids) < 0.23
    assert 0.08 < splits.count("golden") / len(ids) < 0.12
    # adding data never moves an existing example
    assert [SplitRules(0.2, 0.1).split_of(i) for i in ids[:100]] == splits[:100]


def test_text_documents_follow_the_strategy():
    titled = {"doc_id": "t1", "kind": "text", "title": "Token expiry", "text": "# Token expiry\n\nTokens expire after 90 days.",
              "messages": None, "batch": "b", "external_id": "KB-1"}
    untitled = {**titled, "doc_id": "t2", "title": None, "text": "Loose note."}
    build = build_examples([titled, untitled], SplitRules(0.0), "title_to_instruction", "Tell me about {title}.")
    [example] = build.examples
    assert example["messages"] == [
        {"role": "user", "content": "Tell me about Token expiry."},
        {"role": "assistant", "content": "Tokens expire after 90 days."},
    ]
    assert build.dropped[0]["reason"] == "untitled_text"
    excluded = build_examples([titled], SplitRules(0.0), "exclude", "{title}")
    assert excluded.examples == [] and excluded.dropped[0]["reason"] == "text_excluded"
    assert build.ledger.balanced() and excluded.ledger.balanced()


def test_golden_questions_never_reach_training():
    docs = [
        chat("a", "How many boards does the free plan allow?", "Three."),
        chat("b", "How many boards does the free plan allow ?!", "3 boards."),
        chat("c", "how many boards does the free plan alow", "Three boards."),
        chat("d", "How do I rotate an API token?", "Open Settings, then API."),
    ]
    build = build_examples(docs, SplitRules(0.0), "exclude", "{title}", golden_prompts=["How many boards does the free plan allow?"])
    assert [e["id"] for e in build.examples] == ["d"]
    assert {d["reason"] for d in build.dropped} == {"golden_contamination"}
    assert build.ledger.dropped["golden_contamination"] == 3


def test_golden_file_reader_quarantines_bad_lines(tmp_path):
    path = tmp_path / "golden.jsonl"
    path.write_text(
        '{"id": "G1", "question": "Q?", "reference_answer": "A.", "source_doc_id": "KB-1", "tags": ["x"]}\n'
        '{"id": "G2", "question": "Q2?"}\n'
        "{broken\n"
    )
    examples, quarantine = read_golden_file(path, "golden.jsonl")
    assert [e["id"] for e in examples] == ["G1"]
    assert examples[0]["source_doc_id"] == "KB-1" and examples[0]["split"] == "golden"
    assert [(q["line"], q["reason"]) for q in quarantine] == [(2, "unrecognised_schema"), (3, "malformed_json")]
    assert "reference_answer" in quarantine[0]["detail"]


def test_dataset_policy_validation():
    with pytest.raises(ValueError, match="room for train"):
        DatasetPolicy(validation_fraction=0.6, golden_holdout_fraction=0.5)
    with pytest.raises(ValueError, match="{title}"):
        DatasetPolicy(title_template="no placeholder")
