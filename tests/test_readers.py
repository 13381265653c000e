"""Ingestion: every supported format and record shape, and every bad-input kind quarantined."""

import json

import pandas as pd
import pytest

from resources.ingestion.readers import ReaderLimits, read_batch
from resources.records import document_id, sha256_hex


def read(tmp_path, name, limits=ReaderLimits()):
    return read_batch(name, tmp_path / name, tmp_path, limits)


def test_record_shapes_normalise_to_one_schema(tmp_path):
    lines = [
        {"id": "A", "text": "Plain text document."},
        {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]},
        {"instruction": "Summarise", "input": "Long text", "output": "Short."},
        {"prompt": "Q?", "completion": "A."},
    ]
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    result = read(tmp_path, "b.jsonl")
    assert [d["kind"] for d in result.documents] == ["text", "chat", "instruction", "instruction"]
    instruction = json.loads(result.documents[2]["messages"])
    assert instruction == [{"role": "user", "content": "Summarise\n\nLong text"}, {"role": "assistant", "content": "Short."}]
    sha = sha256_hex((tmp_path / "b.jsonl").read_bytes())
    assert result.documents[0]["doc_id"] == document_id(sha, 1)
    assert result.documents[0]["external_id"] == "A"
    assert {d["source_sha256"] for d in result.documents} == {sha}
    assert [d["line"] for d in result.documents] == [1, 2, 3, 4]
    assert result.ledger().balanced() and not result.quarantine


def test_formats_json_csv_parquet_txt_md_and_folders(tmp_path):
    batch = tmp_path / "batch"
    batch.mkdir()
    (batch / "a.json").write_text(json.dumps([{"text": "one two three"}, {"prompt": "p", "completion": "c"}]))
    (batch / "b.csv").write_text("id,prompt,completion\nQ1,What?,That.\n")
    pd.DataFrame([{"text": "from parquet"}]).to_parquet(batch / "c.parquet")
    (batch / "d.md").write_text("# Title Here\n\nBody text.\n")
    (batch / "e.txt").write_text("Just text.\n")
    (batch / ".hidden.jsonl").write_text("not read")
    result = read(tmp_path, "batch")
    assert len(result.documents) == 6
    assert {d["source_path"] for d in result.documents} == {f"batch/{n}" for n in ("a.json", "b.csv", "c.parquet", "d.md", "e.txt")}
    md = next(d for d in result.documents if d["source_path"].endswith(".md"))
    assert md["title"] == "Title Here"
    csv = next(d for d in result.documents if d["source_path"].endswith(".csv"))
    assert csv["external_id"] == "Q1" and csv["kind"] == "instruction"


def test_ids_are_stable_across_paths(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "same content"}\n')
    (tmp_path / "b.jsonl").write_text('{"text": "same content"}\n')
    a, b = read(tmp_path, "a.jsonl"), read(tmp_path, "b.jsonl")
    assert a.documents[0]["doc_id"] == b.documents[0]["doc_id"]


@pytest.mark.parametrize(
    "content, reason",
    [
        (b'{"text": "good"}\n{"text": "trunc\n', "malformed_json"),
        (b'{"text": "good"}\n{"text": "\xff\xfe bad"}\n', "invalid_utf8"),
        (b'{"text": "good"}\n{"text": "   "}\n', "empty_record"),
        (b'{"text": "good"}\n{"prompt": "", "completion": ""}\n', "empty_record"),
        (b'{"text": "good"}\n{"foo": "bar"}\n', "unrecognised_schema"),
        (b'{"text": "good"}\n{"messages": [{"role": "robot", "content": "x"}]}\n', "invalid_messages"),
        (b'{"text": "good"}\n{"text": "' + b"x" * 200 + b'"}\n', "oversized_record"),
    ],
)
def test_bad_records_are_quarantined_and_the_rest_kept(tmp_path, content, reason):
    (tmp_path / "f.jsonl").write_bytes(content)
    result = read(tmp_path, "f.jsonl", ReaderLimits(max_record_chars=100))
    assert len(result.documents) == 1
    assert [q["reason"] for q in result.quarantine] == [reason]
    row = result.quarantine[0]
    assert row["source_path"] == "f.jsonl" and row["line"] == 2
    assert "f.jsonl:2" in row["detail"]
    ledger = result.ledger()
    assert ledger.records_in == 2 and ledger.balanced()


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("blob.jsonl", b"\x00\x01\x02binary", "binary_file"),
        ("empty.jsonl", b"", "empty_file"),
        ("doc.pdfx", b"whatever", "unsupported_format"),
        ("bad.csv", b"a,b\n\xff\xfe,x\n", "invalid_utf8"),
        ("bad.json", b'[{"text": "a"', "malformed_json"),
        ("big.txt", b"x" * 2048, "oversized_file"),
    ],
)
def test_bad_files_are_quarantined_whole(tmp_path, name, content, reason):
    (tmp_path / name).write_bytes(content)
    result = read(tmp_path, name, ReaderLimits(max_file_bytes=1024))
    assert result.documents == []
    assert [q["reason"] for q in result.quarantine] == [reason]
    assert result.quarantine[0]["line"] is None
    assert result.ledger().balanced()


def test_missing_batch_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="gone.jsonl"):
        read(tmp_path, "gone.jsonl")


def test_records_that_break_parsers_are_quarantined_one_by_one(tmp_path):
    """A 100,000-deep nested line (RecursionError), a 5,000-digit integer (ValueError) and a lone surrogate
    (UnicodeEncodeError when the table is written) each cost their own record only."""
    lines = ['{"text": "kept before"}', "[" * 100_000 + "]" * 100_000, '{"text": "n", "n": ' + "9" * 5_000 + "}",
             '{"text": "broken \\ud800 surrogate"}', '{"text": "kept after"}']
    (tmp_path / "b.jsonl").write_text("\n".join(lines) + "\n")
    result = read(tmp_path, "b.jsonl")
    assert [d["text"] for d in result.documents] == ["kept before", "kept after"]
    reasons = {q["line"]: q["reason"] for q in result.quarantine}
    assert reasons == {2: "malformed_json", 3: "malformed_json", 4: "invalid_unicode"}
    assert all("b.jsonl:" in q["detail"] for q in result.quarantine) and result.ledger().balanced()
    pd.DataFrame(result.documents).to_parquet(tmp_path / "out.parquet")  # what is kept can be written


def test_symlinks_fifos_and_utf16_in_a_batch(tmp_path):
    import os

    inbox = tmp_path / "inbox"
    batch = inbox / "batch"
    batch.mkdir(parents=True)
    secret = tmp_path / "credentials.txt"
    secret.write_text("aws_secret_access_key = abc")
    (batch / "ok.txt").write_text("A plain document that is read.")
    (batch / "inside.txt").symlink_to(batch / "ok.txt")  # resolves inside the inbox: read
    (batch / "outside.txt").symlink_to(secret)  # a link to a file elsewhere: never read
    (batch / "dangling.txt").symlink_to(tmp_path / "gone.txt")
    os.mkfifo(batch / "pipe.txt")  # reading it would block for ever
    (batch / "utf16.txt").write_bytes("Grüße aus dem Handbuch, in UTF-16.".encode("utf-16"))
    result = read_batch("batch", batch, inbox, ReaderLimits())
    texts = sorted(d["text"] for d in result.documents)
    assert any("Grüße" in t for t in texts) and sum("plain document" in t for t in texts) >= 1
    assert not any("aws_secret" in t for t in texts)
    reasons = {q["source_path"].split("/")[-1]: q["reason"] for q in result.quarantine}
    assert reasons == {"outside.txt": "symlink_outside_inbox", "dangling.txt": "dangling_symlink",
                       "pipe.txt": "not_a_regular_file"}
    assert result.ledger().balanced()


def test_a_fifo_or_dangling_link_at_the_top_of_the_inbox_does_not_stop_the_sensor(tmp_path):
    import os

    from resources.ingestion.inbox import Inbox

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "good.txt").write_text("A good document.")
    os.mkfifo(inbox / "pipe.txt")
    (inbox / "dangling.md").symlink_to(tmp_path / "nowhere.md")
    box = Inbox(path=str(inbox), settle_seconds=0)
    names = {b.key for b in box.batches()}
    assert "good.txt" in names
    for key in names:  # every entry hashes and reads without blocking or raising
        box.content_hash(key)
        result = box.read(key)
        assert result.ledger().balanced()
