"""Ingestion: every supported format and record shape, and every bad-input kind quarantined."""

import csv
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
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
        ("bad.csv", b"a\xff,b\nx,y\n", "invalid_utf8"),  # in the header: no row can be read
        ("dup.csv", b"text,text\nx,y\n", "malformed_csv"),
        ("quote.csv", b'"text,b\nx,y\n', "malformed_csv"),
        ("big.parquet", b"PAR1" * 600, "oversized_file"),
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


def test_a_bad_csv_row_costs_only_itself_and_the_rows_are_counted_from_the_file(tmp_path):
    (tmp_path / "qa.csv").write_text('id,prompt,completion\nQ1,What?,That.\nQ2,Why?,"Because,\nof this."\n\n'
                                     "Q3,How?,Like so.,extra\nQ4,When?,Now.\n")
    result = read(tmp_path, "qa.csv")
    assert [d["external_id"] for d in result.documents] == ["Q1", "Q2", "Q4"]
    assert [d["line"] for d in result.documents] == [1, 2, 4]  # data rows: a quoted newline and a blank line are not rows
    assert [(q["line"], q["reason"]) for q in result.quarantine] == [(3, "csv_bad_row")]
    assert result.quarantine[0]["detail"] == "qa.csv:3: row 3 (line 6) has 4 fields, the header has 3"
    ledger = result.ledger()
    assert ledger.records_in == 4 and result.files[0]["records_in"] == 4 and ledger.balanced()
    result.documents.pop()  # a row lost between the parser and the table ...
    assert not result.ledger().balanced()  # ... shows: records in are counted from the source, not the outcomes


@pytest.mark.parametrize(
    "row, reason, detail",
    [
        (b"Q2,Short.", "csv_bad_row", "row 2 (line 3) has 2 fields, the header has 3"),
        (b"Q2,Caf\xe9?,Yes.", "invalid_utf8", "row 2 (line 3): invalid UTF-8 (byte 0xE9) in column 'prompt'"),
        (b'Q2,"' + b"x" * (csv.field_size_limit() + 1) + b'",y', "csv_bad_row",
         f"row 2 (line 3): a field is longer than the csv field-size limit ({csv.field_size_limit()} characters)"),
        (b'Q2,"ab"c,y', "csv_bad_row", "row 2 (line 3): malformed CSV"),
        (b"Q2,,Nothing asked.", "empty_record", "prompt/completion records need both fields non-empty"),
    ],
)
def test_csv_rows_that_cannot_be_records_are_quarantined_by_row(tmp_path, row, reason, detail):
    (tmp_path / "qa.csv").write_bytes(b"id,prompt,completion\nQ1,What?,That.\n" + row + b"\nQ3,How?,Like so.\n")
    result = read(tmp_path, "qa.csv")
    assert [d["external_id"] for d in result.documents] == ["Q1", "Q3"]
    assert [(q["line"], q["reason"]) for q in result.quarantine] == [(2, reason)]
    assert result.quarantine[0]["detail"].startswith("qa.csv:2: ") and detail in result.quarantine[0]["detail"]
    assert result.ledger().records_in == 3 and result.ledger().balanced()


def test_an_unclosed_csv_quote_is_one_bad_row_not_a_silent_merge(tmp_path):
    (tmp_path / "t.csv").write_text('text\nkept\n"never closed\nswallowed\n')
    result = read(tmp_path, "t.csv")
    assert [d["text"] for d in result.documents] == ["kept"]
    assert [q["reason"] for q in result.quarantine] == ["csv_bad_row"]
    assert "lines 3-4" in result.quarantine[0]["detail"] and "not closed" in result.quarantine[0]["detail"]
    assert result.ledger().balanced()


def _refuse_loading(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the rows were loaded")

    for name in ("iter_batches", "read_row_group", "read_row_groups", "read"):
        monkeypatch.setattr(pq.ParquetFile, name, never)
    monkeypatch.setattr(pq, "read_table", never)
    monkeypatch.setattr(pd, "read_parquet", never)


@pytest.mark.parametrize(
    "limits, detail",
    [
        (ReaderLimits(max_parquet_rows=50_000), "100000 rows exceeds max_parquet_rows=50000"),
        (ReaderLimits(max_parquet_bytes=64 * 1024), "bytes uncompressed exceeds max_parquet_bytes=65536"),
    ],
)
def test_a_parquet_file_that_would_expand_past_the_limits_is_refused_by_its_metadata(tmp_path, monkeypatch, limits,
                                                                                      detail):
    pq.write_table(pa.table({"text": ["x"] * 100_000}), tmp_path / "bomb.parquet", compression="zstd",
                   use_dictionary=False)  # plain-encoded: its metadata declares ~500 kB uncompressed
    assert (tmp_path / "bomb.parquet").stat().st_size < 16 * 1024  # small on disk, 100,000 records inside
    _refuse_loading(monkeypatch)
    result = read(tmp_path, "bomb.parquet", limits)
    assert result.documents == []
    assert [(q["reason"], q["line"]) for q in result.quarantine] == [("parquet_too_large", None)]
    assert detail in result.quarantine[0]["detail"] and result.quarantine[0]["detail"].startswith("bomb.parquet: ")
    assert result.ledger().records_in == 1 and result.ledger().balanced()


def test_parquet_within_the_limits_is_read_one_row_group_at_a_time(tmp_path, monkeypatch):
    rows = [{"id": f"R{i}", "text": f"row {i}"} for i in range(35)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet", row_group_size=10, compression="zstd")
    assert pq.ParquetFile(tmp_path / "t.parquet").metadata.num_row_groups == 4
    monkeypatch.setattr(pd, "read_parquet", lambda *a, **k: pytest.fail("read the whole table at once"))
    groups = []
    iter_batches = pq.ParquetFile.iter_batches
    monkeypatch.setattr(pq.ParquetFile, "iter_batches",
                        lambda self, *a, **k: groups.append(k["row_groups"]) or iter_batches(self, *a, **k))
    result = read(tmp_path, "t.parquet", ReaderLimits(max_parquet_rows=35))
    assert [d["external_id"] for d in result.documents] == [f"R{i}" for i in range(35)]
    assert [d["line"] for d in result.documents] == list(range(1, 36))
    assert groups == [[0], [1], [2], [3]]
    assert not result.quarantine and result.ledger().records_in == 35 and result.ledger().balanced()


def test_a_corrupt_parquet_row_group_costs_only_its_rows(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": [f"row {i} " + "x" * 50 for i in range(30)]}), path, row_group_size=10,
                   compression="zstd")
    column = pq.ParquetFile(path).metadata.row_group(1).column(0)
    start = column.dictionary_page_offset or column.data_page_offset
    data = bytearray(path.read_bytes())
    data[start + 20:start + column.total_compressed_size - 4] = b"Z" * (column.total_compressed_size - 24)
    path.write_bytes(bytes(data))
    result = read(tmp_path, "t.parquet")
    assert [d["line"] for d in result.documents] == [*range(1, 11), *range(21, 31)]  # lines keep their place
    assert [(q["line"], q["reason"]) for q in result.quarantine] == [(11, "malformed_parquet")]
    assert result.quarantine[0]["detail"].startswith("t.parquet:11: row group 1 (rows 11-20) is unreadable")
    assert result.ledger().records_in == 21 and result.ledger().balanced()


def test_jsonl_is_streamed_line_by_line_never_read_whole(tmp_path, monkeypatch):
    lines = [b'{"text": "first"}', b'{"text": "trunc', b"", b'{"foo": 1}', b'{"text": "' + b"y" * 200 + b'"}',
             b'\xef\xbb\xbf{"text": "a stray BOM mid-file"}', b'{"text": "last"}']
    (tmp_path / "f.jsonl").write_bytes(b"\n".join(lines))
    monkeypatch.setattr(type(tmp_path), "read_bytes", lambda self: pytest.fail(f"{self.name} was read whole"))
    result = read(tmp_path, "f.jsonl", ReaderLimits(max_record_chars=100))
    assert [(d["line"], d["text"]) for d in result.documents] == [(1, "first"), (7, "last")]
    assert [(q["line"], q["reason"]) for q in result.quarantine] == [
        (2, "malformed_json"), (4, "unrecognised_schema"), (5, "oversized_record"), (6, "malformed_json")]
    assert result.files[0]["sha256"] == sha256_hex(b"\n".join(lines))
    assert result.ledger().records_in == 6 and result.ledger().balanced()


def test_utf16_jsonl_is_streamed_and_a_bad_one_quarantined_whole(tmp_path):
    (tmp_path / "u.jsonl").write_bytes('{"text": "Grüße"}\n{"text": "zwei"}\n'.encode("utf-16"))
    result = read(tmp_path, "u.jsonl")
    assert [d["text"] for d in result.documents] == ["Grüße", "zwei"] and result.ledger().balanced()
    (tmp_path / "bad.jsonl").write_bytes('{"text": "a"}\n'.encode("utf-16") + b"\x00\xd8\x41\x00")  # lone surrogate
    result = read(tmp_path, "bad.jsonl")
    assert result.documents == [] and [q["reason"] for q in result.quarantine] == ["invalid_encoding"]


def test_a_file_that_fails_half_way_is_one_unreadable_file_not_half_its_records(tmp_path, monkeypatch):
    from resources.ingestion import readers

    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n{"text": "three"}\n')
    (tmp_path / "b.jsonl").write_text('{"text": "other file"}\n')
    calls = []
    real = readers.document_id
    monkeypatch.setattr(readers, "document_id", lambda sha, line: calls.append(line) or (
        real(sha, line) if len(calls) != 2 else 1 / 0))
    result = read_batch("t", tmp_path, tmp_path, ReaderLimits())
    assert [d["text"] for d in result.documents] == ["other file"]
    assert [(q["source_path"], q["reason"]) for q in result.quarantine] == [("a.jsonl", "unreadable_file")]
    assert [f["path"] for f in result.files] == ["a.jsonl", "b.jsonl"]
    assert result.ledger().records_in == 2 and result.ledger().balanced()


def test_a_quarantine_detail_never_quotes_keys_that_are_not_field_names(tmp_path):
    """A record keyed by an e-mail address is refused without quoting the address (the detail reaches reports);
    field-like keys are still named, so the user sees what the file holds."""
    (tmp_path / "f.jsonl").write_text(json.dumps({"jane.doe@example.com": "hi", "body": "x"}) + "\n")
    row = read(tmp_path, "f.jsonl").quarantine[0]
    assert row["reason"] == "unrecognised_schema"
    assert "jane.doe" not in row["detail"] and "keys: body" in row["detail"] and "1 other key" in row["detail"]


def test_the_event_log_gets_quarantine_counts_never_details():
    from assets.metadata import log_quarantine

    class Log:
        lines: list[str] = []

        def warning(self, line):
            self.lines.append(line)

    log = Log()
    rows = [{"reason": "malformed_json", "source_path": "a.jsonl", "detail": "a.jsonl:2: secret-ish text"},
            {"reason": "malformed_json", "source_path": "a.jsonl", "detail": "a.jsonl:3: more"},
            {"reason": "empty_record", "source_path": "b.csv", "detail": "b.csv:4: x"}]
    log_quarantine(log, rows)
    assert log.lines == ["quarantined 3 record(s): empty_record x1 (b.csv), malformed_json x2 (a.jsonl); "
                         "the details are in quarantine.parquet"]
    log_quarantine(log, [])
    assert len(log.lines) == 1


def test_a_large_jsonl_file_is_split_into_partitions_that_together_read_as_the_file(tmp_path):
    from resources.ingestion.inbox import Inbox

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    lines = []
    for i in range(2_500):
        lines.append(json.dumps({"id": f"T-{i}", "text": f"Ticket {i}: the export of workspace {i} failed twice."}))
        if i % 400 == 0:
            lines.append("")  # blank lines are layout, not records
    lines[1_700] = "{not json"  # one bad record: quarantined in its part, the rest of the part kept
    (inbox / "export.jsonl").write_text("\n".join(lines) + "\n")
    (inbox / "small.jsonl").write_text(json.dumps({"text": "One short record about invoices."}) + "\n")
    whole = Inbox(path=str(inbox), settle_seconds=0)
    split = whole.model_copy(update={"records_per_partition": 1_000})
    assert [b.key for b in whole.batches()] == ["export.jsonl", "small.jsonl"]
    keys = [b.key for b in split.batches()]
    assert keys == ["export.jsonl--part-0000", "export.jsonl--part-0001", "export.jsonl--part-0002", "small.jsonl"]

    full = whole.read("export.jsonl")
    parts = [split.read(k) for k in keys[:3]]
    assert [p.files[0]["records_in"] for p in parts] == [1_000, 1_000, 500]  # records in, per part
    assert [d["doc_id"] for p in parts for d in p.documents] == [d["doc_id"] for d in full.documents]
    assert [d["line"] for p in parts for d in p.documents] == [d["line"] for d in full.documents]
    assert [q["line"] for p in parts for q in p.quarantine] == [q["line"] for q in full.quarantine] != []
    assert {d["batch"] for d in parts[1].documents} == {"export.jsonl--part-0001"}
    assert len({split.content_hash(k) for k in keys}) == 4 and split.content_hash(keys[0]) == split.content_hash(keys[0])

    # a part key that is not a part of a top-level file is no way out of the inbox
    for bad in ("../export.jsonl--part-0000", ".hidden.jsonl--part-0000"):
        with pytest.raises((ValueError, FileNotFoundError)):
            split.read(bad)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_large_csv_or_parquet_file_is_split_into_partitions_that_together_read_as_the_file(tmp_path, fmt):
    import pandas as pd

    from resources.ingestion.inbox import Inbox

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    rows = [{"id": f"T-{i}", "title": f"Ticket {i}", "text": f"Ticket {i}: the export of workspace {i} failed twice."}
            for i in range(2_300)]
    path = inbox / f"export.{fmt}"
    if fmt == "csv":
        lines = ["id,title,text"] + [f'{r["id"]},{r["title"]},"{r["text"]}"' for r in rows]
        lines[1_201] = "T-1200,only two fields"  # one bad row: quarantined in its part, the rest kept
        lines[40] = 'T-39,Ticket 39,"a quoted field\nthat spans two lines"'  # one record, two lines
        path.write_text("\n".join(lines) + "\n")
    else:
        pd.DataFrame(rows).to_parquet(path, row_group_size=300)  # row groups that straddle the parts
    whole = Inbox(path=str(inbox), settle_seconds=0)
    split = whole.model_copy(update={"records_per_partition": 1_000})
    keys = [b.key for b in split.batches()]
    assert keys == [f"export.{fmt}--part-0000", f"export.{fmt}--part-0001", f"export.{fmt}--part-0002"]

    full = whole.read(f"export.{fmt}")
    parts = [split.read(k) for k in keys]
    assert [p.files[0]["records_in"] for p in parts] == [1_000, 1_000, 300]
    assert sum(p.files[0]["records_in"] for p in parts) == full.files[0]["records_in"] == 2_300
    assert [d["doc_id"] for p in parts for d in p.documents] == [d["doc_id"] for d in full.documents]
    assert [d["text"] for p in parts for d in p.documents] == [d["text"] for d in full.documents]
    assert [q["line"] for p in parts for q in p.quarantine] == [q["line"] for q in full.quarantine]
    if fmt == "csv":
        assert [len(p.quarantine) for p in parts] == [0, 1, 0] and parts[1].quarantine[0]["reason"] == "csv_bad_row"
        assert "a quoted field\nthat spans two lines" in parts[0].documents[39]["text"]
    assert {d["batch"] for d in parts[2].documents} == {f"export.{fmt}--part-0002"}
    assert len({split.content_hash(k) for k in keys}) == 3


def test_a_file_that_is_refused_whole_is_not_split(tmp_path):
    from resources.ingestion.inbox import Inbox

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "headless.csv").write_text("a,a\n" + "1,2\n" * 50)  # a header that names a column twice
    (inbox / "notes.json").write_text(json.dumps([{"text": f"note {i}"} for i in range(50)]))  # JSON is not split
    split = Inbox(path=str(inbox), settle_seconds=0, records_per_partition=10)
    assert [b.key for b in split.batches()] == ["headless.csv", "notes.json"]
    assert split.read("headless.csv").quarantine[0]["reason"] == "malformed_csv"
