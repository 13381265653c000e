"""Read one ingestion batch (a file, or a folder of files) into normalised documents.

Every unit read ends in exactly one place: a document, or a quarantine row naming the file, the
line and the reason. A bad line never fails the batch; a bad file quarantines only that file.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

import pyarrow.parquet as pq

from resources.knowledge.parsing import BINARY_FORMATS, DOCUMENT_FORMATS, ParseError, parse_document
from resources.records import ROLES, Ledger, document_id, join_segments, sha256_hex

RECORD_FORMATS = ("jsonl", "json", "csv", "parquet")  # files of records (each record one document)
SUPPORTED_FORMATS = RECORD_FORMATS + DOCUMENT_FORMATS  # ... and files that are one document each, of any length


@dataclass(frozen=True)
class ReaderLimits:
    max_file_bytes: int = 512 * 1024 * 1024
    max_record_chars: int = 50_000
    max_parquet_rows: int = 1_000_000  # rows a Parquet file's metadata may declare
    max_parquet_bytes: int = 1024 * 1024 * 1024  # uncompressed bytes its row groups may declare, in all


@dataclass
class BatchReadResult:
    documents: list[dict[str, Any]] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)  # path, sha256, bytes, format, records_in, records, quarantined
    forgotten: list[str] = field(default_factory=list)  # doc ids dropped by the forget list
    duplicates: list[dict[str, Any]] = field(default_factory=list)  # files byte-identical to one read before

    def ledger(self) -> Ledger:
        ledger = Ledger(stage="raw_documents", kept=len(self.documents))
        for row in self.quarantine:
            ledger.quarantined[row["reason"]] += 1
        if self.forgotten:
            ledger.dropped["forgotten"] = len(self.forgotten)
        if self.duplicates:
            ledger.dropped["exact_duplicate"] = sum(d["records"] for d in self.duplicates)
        # counted from the sources as their parsers saw them (rows, lines, items; 1 for a file quarantined whole),
        # never from the outcomes: a record lost between parser and table unbalances the ledger
        ledger.records_in = sum(f["records_in"] for f in self.files)
        return ledger


class RecordError(ValueError):
    """A record that cannot become a document; `reason` is the short code in the quarantine table."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def batch_files(batch_path: Path) -> list[Path]:
    """The entries of one batch: the entry itself, or every non-hidden entry under the folder that is not a
    folder — symlinks and special files (FIFOs, sockets) included, so that `entry_problem` can report them."""
    if batch_path.is_dir() and not batch_path.is_symlink():
        return sorted(
            p
            for p in batch_path.rglob("*")
            if (p.is_symlink() or not p.is_dir()) and not any(part.startswith(".") for part in p.relative_to(batch_path).parts)
        )
    if batch_path.is_symlink() or batch_path.exists():
        return [batch_path]
    raise FileNotFoundError(f"ingestion batch {batch_path} does not exist (was it removed from the inbox?)")


def entry_problem(path: Path, inbox_root: Path) -> tuple[str, str] | None:
    """Why an inbox entry is not read (None: a regular file inside the inbox): a symlink is followed only when it
    resolves to a regular file inside the inbox (a link to a credentials file elsewhere is not ingested)."""
    if path.is_symlink():
        target = path.resolve()
        if not target.exists():
            return "dangling_symlink", f"{path.name}: a symlink to {target.name}, which does not exist"
        if not target.is_relative_to(inbox_root.resolve()):
            return "symlink_outside_inbox", f"{path.name}: a symlink to a file outside the inbox (not followed)"
    if not path.is_file():
        return "not_a_regular_file", f"{path.name}: not a regular file (a FIFO, socket or device is never read)"
    return None


def entry_stat(path: Path) -> tuple[int, int]:
    """(size, mtime_ns) of an entry without following it anywhere it may not lead."""
    stat = path.lstat()
    return stat.st_size, stat.st_mtime_ns


def read_batch(batch: str, batch_path: Path, inbox_root: Path, limits: ReaderLimits,
               select: tuple[int, int] | None = None) -> BatchReadResult:
    """Every record of the batch's files; `select` = (start, stop): only those records of a single JSONL, CSV or
    Parquet file (one part of a file split into partitions, `Inbox.records_per_partition`)."""
    result = BatchReadResult()
    for path in batch_files(batch_path):
        rel = path.relative_to(inbox_root).as_posix()
        marks = len(result.documents), len(result.quarantine), len(result.files), len(result.duplicates)
        try:
            _read_file(batch, path, rel, limits, result, entry_problem(path, inbox_root), select)
        except Exception as err:  # noqa: BLE001 - one unreadable file never stops its batch
            del result.documents[marks[0]:], result.quarantine[marks[1]:], result.files[marks[2]:]  # all of it, once
            del result.duplicates[marks[3]:]
            result.quarantine.append({"batch": batch, "source_path": rel, "source_sha256": "", "line": None,
                                      "reason": "unreadable_file", "detail": f"{rel}: {type(err).__name__}: {str(err)[:200]}"})
            result.files.append({"path": rel, "sha256": "", "bytes": 0, "format": path.suffix.lower().lstrip("."),
                                 "records_in": 1, "records": 0, "quarantined": 1})
    return result


def _read_file(batch: str, path: Path, rel: str, limits: ReaderLimits, out: BatchReadResult,
               problem: tuple[str, str] | None = None, select: tuple[int, int] | None = None) -> None:
    fmt = path.suffix.lower().lstrip(".")
    if problem is not None:
        out.files.append({"path": rel, "sha256": "", "bytes": 0, "format": fmt, "records_in": 1, "records": 0,
                          "quarantined": 1})
        out.quarantine.append({"batch": batch, "source_path": rel, "source_sha256": "", "line": None,
                               "reason": problem[0], "detail": f"{rel}: {problem[1]}"})
        return None
    size = path.stat().st_size
    text_file = fmt != "parquet" and fmt not in BINARY_FORMATS
    data: bytes | None = None  # JSONL is streamed line by line: never held whole
    scan = _Scan()
    if size <= limits.max_file_bytes:
        if fmt == "jsonl":
            scan = _scan_file(path)
        else:
            data = path.read_bytes()
            scan = _Scan(sha256_hex(data) if data else "", not data.strip(), data[:8192], data[:8192])
    sha = scan.sha256
    info = {"path": rel, "sha256": sha, "bytes": size, "format": fmt, "records_in": 0, "records": 0, "quarantined": 0}
    out.files.append(info)

    def quarantine(reason: str, detail: str, line: int | None = None) -> None:
        out.quarantine.append(
            {"batch": batch, "source_path": rel, "source_sha256": sha, "line": line, "reason": reason, "detail": detail}
        )
        info["quarantined"] += 1

    def refuse(reason: str, detail: str) -> None:  # the whole file, as one record
        info["records_in"] += 1
        quarantine(reason, detail)

    if fmt not in SUPPORTED_FORMATS:
        return refuse("unsupported_format", f"{rel}: extension .{fmt} is not one of {', '.join(SUPPORTED_FORMATS)}")
    if size > limits.max_file_bytes:
        return refuse("oversized_file", f"{rel}: {size} bytes exceeds max_file_bytes={limits.max_file_bytes}")
    if scan.blank:
        return refuse("empty_file", f"{rel}: the file is empty")
    encoding = None  # UTF-16/32 with a byte-order mark: decoded here, read like UTF-8 from now on
    if text_file and scan.head.startswith(UNICODE_BOMS):
        encoding = next(e for b, e in BOM_ENCODINGS if scan.head.startswith(b))
        if data is not None:
            try:
                data = data.decode(encoding).encode("utf-8")
                scan.text_head = data[:8192]
            except UnicodeDecodeError as err:
                scan.encoding_error = f"{err.reason} at byte {err.start}"
        if scan.encoding_error:
            return refuse("invalid_encoding", f"{rel}: marked as UTF-16/32 but not valid ({scan.encoding_error})")
    if text_file and b"\x00" in scan.text_head:
        return refuse("binary_file", f"{rel}: NUL bytes found; this is a binary file, not .{fmt} text")
    first = next((f for f in out.files[:-1] if f["sha256"] == sha and not f.get("duplicate_of")), None)
    if first is not None:  # a byte-identical copy: its records are the first file's, dropped with the reason
        info.update(duplicate_of=first["path"], records_in=first["records_in"], records=0)
        out.duplicates.append({"batch": batch, "source_path": rel, "duplicate_of": first["path"], "sha256": sha,
                               "records": first["records_in"],
                               "detail": f"{rel} is byte-identical to {first['path']} (sha256 {sha[:16]})"})
        return None

    with path.open("rb") if data is None else io.BytesIO(data) as handle:
        if fmt == "jsonl":
            units = jsonl_records(_utf8_lines(handle, encoding), rel, select)
        elif fmt == "parquet":
            units = _parquet_units(data, rel, limits, select)
        elif fmt == "csv" and select is not None:
            units = _selected(_csv_units(data, rel), select)
        else:
            units = _UNITS[fmt](data, rel)
        while True:
            try:
                line, payload = next(units)
            except StopIteration:
                break
            except RecordError as err:  # the file (or what is left of it) is unreadable as this format
                return refuse(err.reason, err.detail)
            except Exception as err:  # noqa: BLE001 - the records read so far stand; the rest is one record
                return refuse("unreadable_file", f"{rel}: {type(err).__name__}: {str(err)[:200]}")
            info["records_in"] += 1  # one unit as the parser saw it, before anything is decided about it
            try:
                if isinstance(payload, RecordError):
                    raise payload
                doc = normalise_record(payload, fmt=fmt, rel=rel, line=line,
                                       limits=limits if fmt in RECORD_FORMATS else None)  # a document is split, never refused for length
                _check_encodable(doc, f"{rel}:{line}")
            except RecordError as err:
                quarantine(err.reason, err.detail, line)
                continue
            except Exception as err:  # noqa: BLE001 - one bad record never stops its file
                quarantine("unreadable_record", f"{rel}:{line}: {type(err).__name__}: {str(err)[:200]}", line)
                continue
            doc.update(batch=batch, source_path=rel, source_sha256=sha, source_format=fmt, line=line)
            doc["doc_id"] = document_id(sha, line)
            out.documents.append(doc)
            info["records"] += 1


@dataclass
class _Scan:
    sha256: str = ""
    blank: bool = True  # nothing but ASCII whitespace
    head: bytes = b""  # the first 8 KiB as stored
    text_head: bytes = b""  # ... and as UTF-8 text (decoded, for a file with a UTF-16/32 byte-order mark)
    encoding_error: str | None = None


def _scan_file(path: Path) -> _Scan:
    """A file's sha256, whether it is blank, its head and (marked UTF-16/32) whether it decodes, in one pass of
    1 MiB chunks: a file read as a stream is never held whole."""
    digest, scan, decoder, offset = hashlib.sha256(), _Scan(), None, 0
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
            if not scan.head:
                scan.head = scan.text_head = chunk[:8192]
                encoding = next((e for b, e in BOM_ENCODINGS if chunk.startswith(b)), None)
                decoder = codecs.getincrementaldecoder(encoding)() if encoding else None
            if scan.blank and chunk.strip():
                scan.blank = False
            if decoder is not None and scan.encoding_error is None:
                pending = len(decoder.getstate()[0])
                try:
                    text = decoder.decode(chunk)
                    if offset == 0:
                        scan.text_head = text[:8192].encode("utf-8", "surrogatepass")
                except UnicodeDecodeError as err:
                    scan.encoding_error = f"{err.reason} at byte {offset - pending + err.start}"
            offset += len(chunk)
        if decoder is not None and scan.encoding_error is None:
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError as err:
                scan.encoding_error = f"{err.reason} at byte {offset - len(err.object) + err.start}"
    scan.sha256 = digest.hexdigest() if offset else ""
    return scan


def _utf8_lines(handle: BinaryIO, encoding: str | None) -> Iterator[bytes]:
    """The file's lines (split at \\n, as UTF-8 bytes), one at a time."""
    if encoding is None:
        yield from handle
        return
    for text in io.TextIOWrapper(handle, encoding=encoding, newline="\n"):
        yield text.encode("utf-8", "surrogatepass")


def _check_encodable(value: Any, where: str) -> None:
    """Text that cannot be written as UTF-8 (a lone surrogate from a JSON escape) is refused here, not when the
    batch's table is written."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise RecordError("invalid_unicode", f"{where}: a lone surrogate (U+{ord(value[err.start]):04X}) cannot be "
                              "stored as UTF-8") from None
    elif isinstance(value, dict):
        for v in value.values():
            _check_encodable(v, where)
    elif isinstance(value, list):
        for v in value:
            _check_encodable(v, where)


BOM_ENCODINGS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF16_LE, "utf-16"),
                 (codecs.BOM_UTF16_BE, "utf-16"))  # UTF-32 first: its little-endian mark starts like UTF-16's
UNICODE_BOMS = tuple(b for b, _ in BOM_ENCODINGS)


# -- format readers: yield (line, dict | RecordError) -------------------------------------------
def _decode(data: bytes, rel: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise RecordError("invalid_utf8", f"{rel}: invalid UTF-8 at byte {err.start}") from None


def jsonl_records(data: bytes | Iterable[bytes], rel: str, select: tuple[int, int] | None = None) -> Iterator[tuple[int, Any]]:
    """(line, record | RecordError) for each non-blank line of `data`: the file's bytes, or its lines one at a
    time (an open binary file), so that memory is bounded by the longest line. `select` = (start, stop): only the
    records (non-blank lines, counted from 0) in that range, the others not even parsed (one part of a file
    split into partitions)."""
    lines = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    record = -1
    for number, raw in enumerate(lines, start=1):
        raw = raw.removesuffix(b"\n")
        if not raw.strip():
            continue  # blank lines are layout, not records
        record += 1
        if select is not None and not select[0] <= record < select[1]:
            if record >= select[1]:
                return
            continue
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as err:
            yield number, RecordError("invalid_utf8", f"{rel}:{number}: invalid UTF-8 at byte {err.start} of the line")
            continue
        try:
            yield number, json.loads(text)
        except json.JSONDecodeError as err:
            yield number, RecordError("malformed_json", f"{rel}:{number}: malformed JSON ({err.msg} at column {err.colno})")
        except (ValueError, RecursionError) as err:  # a 5,000-digit integer; nesting deeper than Python recurses
            yield number, RecordError("malformed_json", f"{rel}:{number}: unreadable JSON ({type(err).__name__}: {str(err)[:120]})")


def _json_units(data: bytes, rel: str) -> Iterator[tuple[int, Any]]:
    try:
        payload = json.loads(_decode(data, rel))
    except json.JSONDecodeError as err:
        raise RecordError("malformed_json", f"{rel}: malformed JSON ({err.msg} at line {err.lineno})") from None
    except (ValueError, RecursionError) as err:
        raise RecordError("malformed_json", f"{rel}: unreadable JSON ({type(err).__name__}: {str(err)[:120]})") from None
    items = payload if isinstance(payload, list) else [payload]
    yield from enumerate(items, start=1)


_ESCAPED = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, kept by surrogateescape


def _csv_units(data: bytes, rel: str) -> Iterator[tuple[int, Any]]:
    """One unit per data row as the csv module sees it (blank lines are layout). A row that cannot be one record
    (a field count unlike the header's, bad quoting, a field over the csv field-size limit, bytes that are not
    UTF-8) is a RecordError for that row alone; a header that cannot name the fields fails the whole file."""
    text = data.decode("utf-8-sig", "surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    number, last_line = 0, 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            lines = _csv_lines(last_line, reader.line_num)
            if header is None:
                raise RecordError("malformed_csv", f"{rel}: the header ({lines}) is unreadable: {_csv_problem(err)}") from None
            last_line = reader.line_num
            number += 1
            yield number, RecordError("csv_bad_row", f"{rel}:{number}: row {number} ({lines}): {_csv_problem(err)}")
            continue
        lines, last_line = _csv_lines(last_line, reader.line_num), reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank lines are layout, not records
        if header is None:
            header = _csv_header(row, rel)
            continue
        number += 1
        where = f"{rel}:{number}"
        if len(row) != len(header):
            yield number, RecordError("csv_bad_row", f"{where}: row {number} ({lines}) has {len(row)} fields, the "
                                      f"header has {len(header)}")
            continue
        bad = next(((i, value) for i, value in enumerate(row) if _ESCAPED.search(value)), None)
        if bad is not None:
            byte = ord(_ESCAPED.search(bad[1]).group()) - 0xDC00
            column = f"column {header[bad[0]]!r}" if header[bad[0]] else f"column {bad[0] + 1}"
            yield number, RecordError("invalid_utf8", f"{where}: row {number} ({lines}): invalid UTF-8 (byte "
                                      f"0x{byte:02X}) in {column}")
            continue
        yield number, {name: value for name, value in zip(header, row) if name}


def _csv_header(row: list[str], rel: str) -> list[str]:
    names = [name.strip() for name in row]
    escaped = next((n for n in names if _ESCAPED.search(n)), None)
    if escaped is not None:
        byte = ord(_ESCAPED.search(escaped).group()) - 0xDC00
        raise RecordError("invalid_utf8", f"{rel}: invalid UTF-8 (byte 0x{byte:02X}) in the header")
    if not any(names):
        raise RecordError("malformed_csv", f"{rel}: the header names no column")
    twice = sorted({n for n in names if n and names.count(n) > 1})
    if twice:
        raise RecordError("malformed_csv", f"{rel}: the header names {', '.join(map(repr, twice))} more than once")
    return names  # an unnamed column (a trailing comma) is counted, and its values are not read


def _csv_lines(previous: int, current: int) -> str:
    return f"line {current}" if current <= previous + 1 else f"lines {previous + 1}-{current}"


def _csv_problem(err: csv.Error) -> str:
    message = str(err)
    if message.startswith("field larger than field limit"):
        return f"a field is longer than the csv field-size limit ({csv.field_size_limit()} characters)"
    if message == "unexpected end of data":
        return "a quoted field is not closed before the end of the file"
    return f"malformed CSV ({message})"


def _parquet_units(data: bytes, rel: str, limits: ReaderLimits | None = None,
                   select: tuple[int, int] | None = None) -> Iterator[tuple[int, Any]]:
    """The rows of a Parquet file, one row group (and at most 1,024 rows) at a time, after its metadata's row
    count and uncompressed size are checked against the limits: a small compressed file that would expand past
    them is refused unread. A row group that cannot be read is one RecordError naming its rows; the others are
    read. `select` = (start, stop): only those rows (counted from 0); row groups outside the range are not
    decoded."""
    limits = limits or ReaderLimits()
    try:
        parquet = pq.ParquetFile(io.BytesIO(data))
        meta = parquet.metadata
        groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
        columns = [n for n in parquet.schema_arrow.names if not n.startswith("__index_level_")]  # pandas' index
    except Exception as err:  # pyarrow raises several types for corrupt files
        raise RecordError("malformed_parquet", f"{rel}: not a readable Parquet file ({err})") from None
    if meta.num_rows > limits.max_parquet_rows:
        raise RecordError("parquet_too_large", f"{rel}: {meta.num_rows} rows exceeds max_parquet_rows="
                          f"{limits.max_parquet_rows} (from the file's metadata; not loaded)")
    expanded = sum(g.total_byte_size for g in groups)
    if expanded > limits.max_parquet_bytes:
        raise RecordError("parquet_too_large", f"{rel}: {expanded} bytes uncompressed exceeds max_parquet_bytes="
                          f"{limits.max_parquet_bytes} (from the file's metadata; not loaded)")
    start, stop = select if select is not None else (0, meta.num_rows)
    first = 1
    for index, group in enumerate(groups):
        end, number = first + group.num_rows - 1, first - 1
        if end <= start or first > stop:  # rows first..end (1-based) are records first-1..end-1
            first = end + 1
            continue
        try:
            for batch in parquet.iter_batches(batch_size=1024, row_groups=[index], columns=columns,
                                              use_pandas_metadata=False):
                if number + batch.num_rows <= start:
                    number += batch.num_rows
                    continue
                for row in batch.to_pylist():
                    number += 1
                    if start < number <= stop:
                        yield number, row
                if number >= stop:
                    break
        except Exception as err:  # noqa: BLE001 - a corrupt row group costs only the rows it holds
            where = f"{rel}:{number + 1}: row group {index} (rows {first}-{end})"
            if number >= first:
                where += f" from row {number + 1}"
            yield number + 1, RecordError("malformed_parquet", f"{where} is unreadable, quarantined as one record: "
                                          f"{type(err).__name__}: {str(err)[:200]}")
        first = end + 1


def _selected(units: Iterator[tuple[int, Any]], select: tuple[int, int]) -> Iterator[tuple[int, Any]]:
    """The units (records, and rows that are one RecordError each) numbered `select[0]` to `select[1] - 1` from 0,
    in the order the reader gives them; the reader stops once past the range."""
    for record, unit in enumerate(units):
        if record >= select[1]:
            return
        if record >= select[0]:
            yield unit


SPLIT_FORMATS = ("jsonl", "csv", "parquet")  # files Inbox.records_per_partition can split into partitions


def count_records(path: Path, limits: ReaderLimits) -> int:
    """The records the reader will see in a JSONL, CSV or Parquet file, counted as `select` counts them: non-blank
    JSONL lines (a line at a time), CSV rows as the csv module reads them (good or bad), Parquet rows from the
    metadata (nothing decoded). 0 when the file will be refused whole (too large, unreadable header or metadata):
    such a file is never split."""
    fmt = path.suffix.lower().lstrip(".")
    if fmt == "jsonl":
        with path.open("rb") as handle:
            return sum(bool(line.strip()) for line in handle)
    if path.stat().st_size > limits.max_file_bytes:
        return 0
    if fmt == "parquet":
        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except Exception:  # noqa: BLE001 - refused when read, with its reason
            return 0
        return rows if rows <= limits.max_parquet_rows else 0
    if fmt == "csv":
        try:
            return sum(1 for _ in _csv_units(path.read_bytes(), path.name))
        except RecordError:
            return 0
    raise ValueError(f"{path.name}: .{fmt} files are not split into partitions (only {', '.join(SPLIT_FORMATS)})")


def _document_units(fmt: str):
    def units(data: bytes, rel: str) -> Iterator[tuple[int, Any]]:
        """One document: its canonical text (headings as ATX lines) and title (its first heading, else the file
        name)."""
        try:
            parsed = parse_document(data, fmt, rel)
        except ParseError as err:
            raise RecordError(err.reason, err.detail) from None
        yield 1, {"text": parsed.text, "title": parsed.title}

    return units


_UNITS = {
    "jsonl": jsonl_records,
    "json": _json_units,
    "csv": _csv_units,
    "parquet": _parquet_units,
    **{fmt: _document_units(fmt) for fmt in DOCUMENT_FORMATS},
}


def file_records(data: bytes, fmt: str, rel: str) -> Iterator[tuple[int, Any]]:
    """(line, record | RecordError) for any supported format; raises RecordError for a bad file."""
    if fmt not in _UNITS:
        raise RecordError("unsupported_format", f"{rel}: extension .{fmt} is not one of {', '.join(SUPPORTED_FORMATS)}")
    return _UNITS[fmt](data, rel)


# -- one record -> one document ---------------------------------------------------------------
def normalise_record(record: Any, *, fmt: str, rel: str, line: int, limits: ReaderLimits | None) -> dict[str, Any]:
    """Map any supported record shape onto the document schema, or raise RecordError. `limits` None: no length
    limit (a whole document file, which chunking splits)."""
    where = f"{rel}:{line}"
    if not isinstance(record, dict):
        raise RecordError("unrecognised_schema", f"{where}: expected an object, got {type(record).__name__}")

    messages: list[dict[str, str]] | None
    if "messages" in record:
        kind, messages = "chat", _chat_messages(record["messages"], where)
    elif "instruction" in record or "output" in record:
        instruction, extra, output = (_text_field(record, k, where) for k in ("instruction", "input", "output"))
        if not instruction or not output:
            raise RecordError("empty_record", f"{where}: instruction records need non-empty 'instruction' and 'output'")
        prompt = f"{instruction}\n\n{extra}" if extra else instruction
        kind, messages = "instruction", [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]
    elif "prompt" in record or "completion" in record:
        prompt, completion = _text_field(record, "prompt", where), _text_field(record, "completion", where)
        if not prompt or not completion:
            raise RecordError("empty_record", f"{where}: prompt/completion records need both fields non-empty")
        kind, messages = "instruction", [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
    elif "text" in record:
        kind, messages = "text", None
        if not _text_field(record, "text", where).strip():
            raise RecordError("empty_record", f"{where}: 'text' is empty")
    else:
        raise RecordError(
            "unrecognised_schema",
            f"{where}: no recognised text field (expected text, messages, instruction/output or "
            f"prompt/completion); found {describe_keys(record)}",
        )

    text = join_segments(m["content"] for m in messages) if messages else record["text"]
    if limits is not None and len(text) > limits.max_record_chars:
        raise RecordError(
            "oversized_record", f"{where}: {len(text)} characters exceeds max_record_chars={limits.max_record_chars}"
        )
    external_id = record.get("id")
    title = record.get("title")
    return {
        "external_id": None if external_id is None else str(external_id),
        "kind": kind,
        "title": None if title is None else str(title),
        "text": text,
        "messages": json.dumps(messages, ensure_ascii=False) if messages else None,
    }


FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")


def describe_keys(record: dict) -> str:
    """The record's keys that look like field names; any other key (an e-mail address, a sentence) is counted,
    never quoted, since a quarantine's detail reaches reports."""
    names = sorted(k for k in map(str, record) if FIELD_NAME.fullmatch(k))
    others = len(record) - len(names)
    shown = f"keys: {', '.join(names)}" if names else "no field-name keys"
    return shown + (f" (+{others} other key(s) not shown)" if others else "")


def _text_field(record: dict[str, Any], key: str, where: str) -> str:
    value = record.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RecordError("unrecognised_schema", f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def _chat_messages(value: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise RecordError("invalid_messages", f"{where}: 'messages' must be a non-empty list")
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise RecordError("invalid_messages", f"{where}: message {i} needs a role in {ROLES}")
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            raise RecordError("invalid_messages", f"{where}: message {i} ({message['role']}) has no text content")
        messages.append({"role": message["role"], "content": content})
    roles = [m["role"] for m in messages]
    if "user" not in roles or "assistant" not in roles:
        raise RecordError("invalid_messages", f"{where}: a chat needs at least one user and one assistant message")
    return messages
