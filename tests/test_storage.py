"""The artifact store with a remote system of record (fsspec): what one machine commits, another reads;
an interrupted upload is never read. Every test runs against two backends: fsspec's local `file://` and a
real S3 HTTP server on 127.0.0.1 (moto's S3 server, through s3fs: the code path of AWS S3 or MinIO)."""

import fsspec
import pandas as pd
import pytest

from resources.storage import COMMITTED, ArtifactNotFoundError, ArtifactStore, write_json, write_table
from servers.s3_server import s3_server


class Remote:
    """A remote URL, the store options to reach it, and an fsspec handle to look behind the store's back."""

    def __init__(self, url: str, options: dict):
        self.url, self.options = url, options
        self.fs, self.base = fsspec.core.url_to_fs(url, **options)

    def store(self, root) -> ArtifactStore:
        return ArtifactStore(root=str(root), remote_url=self.url, storage_options=self.options)

    def exists(self, relative: str) -> bool:
        self.fs.invalidate_cache()
        return self.fs.exists(f"{self.base}/{relative}")


@pytest.fixture(params=["file", "s3"])
def remote(request, tmp_path, monkeypatch):
    if request.param == "file":
        yield Remote(f"file://{tmp_path / 'bucket'}", {})
        return
    with s3_server() as s3:
        # credentials the way production passes them: the standard AWS environment, never the config
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3["key"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3["secret"])
        monkeypatch.setenv("AWS_DEFAULT_REGION", s3["region"])
        yield Remote(f"s3://{s3['bucket']}/tuneforge", {"endpoint_url": s3["endpoint_url"]})


def test_a_fresh_machine_reads_what_another_committed(tmp_path, remote):
    writer = remote.store(tmp_path / "a")
    with writer.writing("instruction_dataset", "v1") as out:
        write_table(out, "examples.parquet", pd.DataFrame({"id": ["e1", "e2"]}))
        write_json(out, "manifest.json", {"batches": ["b1"]})

    reader = remote.store(tmp_path / "b")
    assert reader.partitions("instruction_dataset") == ["v1"]
    assert list(reader.read_table("instruction_dataset", "v1", "examples.parquet")["id"]) == ["e1", "e2"]
    assert reader.read_json("instruction_dataset", "v1", "manifest.json") == {"batches": ["b1"]}
    assert oct((tmp_path / "b" / "instruction_dataset" / "v1").stat().st_mode & 0o777) == "0o700"

    with writer.writing("instruction_dataset", "v1") as out:  # rewritten: the new content wins everywhere
        write_table(out, "examples.parquet", pd.DataFrame({"id": ["e3"]}))
    assert list(remote.store(tmp_path / "c").read_table("instruction_dataset", "v1", "examples.parquet")["id"]) == ["e3"]


def test_an_interrupted_upload_is_ignored(tmp_path, remote):
    writer = remote.store(tmp_path / "a")
    with writer.writing("raw_documents", "batch1") as out:
        write_table(out, "documents.parquet", pd.DataFrame({"doc_id": ["d1"]}))
    remote.fs.makedirs(f"{remote.base}/raw_documents/batch2", exist_ok=True)  # files, but no seal
    remote.fs.pipe_file(f"{remote.base}/raw_documents/batch2/documents.parquet", b"half")
    reader = remote.store(tmp_path / "b")
    assert reader.partitions("raw_documents") == ["batch1"]
    assert not reader.exists("raw_documents", "batch2")
    assert remote.exists(f"raw_documents/batch1/{COMMITTED}")
    with pytest.raises(ArtifactNotFoundError):
        reader.read_table("raw_documents", "batch2")


def test_a_failed_write_uploads_nothing(tmp_path, remote):
    store = remote.store(tmp_path / "a")
    with pytest.raises(RuntimeError):
        with store.writing("eval_report", "v1") as out:
            write_json(out, "scores.json", {})
            raise RuntimeError("killed half-way")
    assert store.partitions("eval_report") == [] and not remote.exists("eval_report")


def test_a_deleted_version_is_gone_everywhere_and_not_fetched_back(tmp_path, remote):
    """Purging (the right to be forgotten) goes through the store: the remote copy (the system of record) is
    unsealed and removed first, so no machine can fetch it back; then the local one."""
    writer = remote.store(tmp_path / "a")
    for version in ("v1", "v2"):
        with writer.writing("support/instruction_dataset", version) as out:
            write_json(out, "manifest.json", {"version": version})
    other = remote.store(tmp_path / "b")
    assert other.read_json("support/instruction_dataset", "v1", "manifest.json") == {"version": "v1"}  # fetched there
    writer.delete("support/instruction_dataset", "v1")
    assert not remote.exists("support/instruction_dataset/v1")
    assert writer.partitions("support/instruction_dataset") == ["v2"]
    assert not remote.store(tmp_path / "c").exists("support/instruction_dataset", "v1")


# -- atomic rewrites: one atomic step, serialised writers, killed writers, deletion, a hostile file list --------
# Both ways of swapping run: exchanging the two folders (Linux renameat2 RENAME_EXCHANGE, where the filesystem has
# it) and a symlink to a versioned sibling replaced in one rename (everywhere else, forced here).
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402

from helpers import ROOT  # noqa: E402
from resources import atomic  # noqa: E402
from resources.storage import UnsafeArtifactError  # noqa: E402

PAYLOAD = 64 * 1024


@pytest.fixture(params=["exchange", "symlink"])
def swap(request, tmp_path, monkeypatch):
    if request.param == "exchange":
        probe = tmp_path / "probe"
        probe.mkdir()
        if not atomic.can_exchange(probe):
            pytest.skip("this filesystem cannot exchange two names (no RENAME_EXCHANGE)")
        probe.rmdir()
    else:
        monkeypatch.setattr(atomic, "_exchanges", lambda folder: False)
    return request.param


def write_version(out, who: str, n: int) -> None:
    """Two files that tell a complete version from a half-written one: a payload written in chunks, and its manifest."""
    body = f"{who}:{n}:".encode().ljust(PAYLOAD, b"x")
    with open(out / "data.bin", "wb") as handle:
        for start in range(0, PAYLOAD, 4096):
            handle.write(body[start:start + 4096])
            handle.flush()
    (out / "manifest.json").write_text(json.dumps({"who": who, "n": n, "size": PAYLOAD}))


def read_version(folder) -> tuple[str, int]:
    manifest = json.loads((folder / "manifest.json").read_text())  # a half-written manifest does not parse
    data = (folder / "data.bin").read_bytes()
    assert len(data) == manifest["size"], f"half-written: {len(data)} of {manifest['size']} bytes"
    who, n, _ = data.decode().split(":")
    return who, int(n)


def assert_one_version(folder, swap: str, name: str = "v1") -> None:
    """Only the target is left (and, with symlinks, the one versioned folder it points to): no temporary, superseded
    or orphaned versioned folder, no lock file."""
    target = folder / name
    extra = sorted(e for e in os.listdir(folder) if e.startswith(f".{name}."))
    if swap == "exchange":
        assert target.is_dir() and not target.is_symlink() and extra == []
    else:
        assert target.is_symlink() and extra == [os.readlink(target)]
        assert oct((folder / extra[0]).stat().st_mode & 0o777) == "0o700"


def test_a_reader_never_sees_a_rewritten_version_missing_or_half_written(tmp_path, swap):
    store = ArtifactStore(root=str(tmp_path / "store"))
    with store.writing("a", "v1") as out:
        write_version(out, "w", 0)
    target = store.partition_dir("a", "v1")
    done, seen, problems = threading.Event(), [], []

    def reader():
        while not done.is_set():
            try:
                if not target.is_dir():
                    problems.append("missing")
                seen.append(read_version(target))
            except Exception as error:  # noqa: BLE001 - every failure is a finding
                problems.append(repr(error))

    polling = threading.Thread(target=reader)
    polling.start()
    try:
        for n in range(1, 201):
            with store.writing("a", "v1") as out:
                write_version(out, "w", n)
    finally:
        done.set()
        polling.join()
    assert problems == [] and len(seen) > 50
    assert [n for _, n in seen] == sorted(n for _, n in seen)  # versions only ever move forward
    assert read_version(target) == ("w", 200)
    assert_one_version(target.parent, swap)
    assert store.partitions("a") == ["v1"]


def test_two_writer_threads_of_one_version_never_fail(tmp_path, swap):
    store = ArtifactStore(root=str(tmp_path / "store"))
    failures = []

    def writer(who):
        for n in range(100):
            try:
                with store.writing("a", "v1") as out:
                    write_version(out, who, n)
            except Exception as error:  # noqa: BLE001
                failures.append(repr(error))

    threads = [threading.Thread(target=writer, args=(who,)) for who in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert read_version(store.partition_dir("a", "v1")) in {("a", 99), ("b", 99)}
    assert_one_version(store.asset_dir("a"), swap)


WRITER = r"""
import json, sys
from pathlib import Path
from resources import atomic
target, swap, who = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
if swap == "symlink":
    atomic._exchanges = lambda folder: False
for n in range(100):
    with atomic.atomic_directory(target, owner_only=True) as out:
        (out / "data.bin").write_bytes(f"{who}:{n}:".encode().ljust(%d, b"x"))
        (out / "manifest.json").write_text(json.dumps({"who": who, "n": n, "size": %d}))
""" % (PAYLOAD, PAYLOAD)


def test_two_writer_processes_of_one_version_never_fail(tmp_path, swap):
    target = tmp_path / "store" / "a" / "v1"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(target), swap, who], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for who in ("p", "q")]
    results = [(w.wait(timeout=120), w.stderr.read()) for w in writers]
    for writer in writers:
        writer.stdout.close()
        writer.stderr.close()
    assert results == [(0, ""), (0, "")]
    assert read_version(target) in {("p", 99), ("q", 99)}
    assert oct(target.stat().st_mode & 0o777) == "0o700" and oct((target / "data.bin").stat().st_mode & 0o777) == "0o600"
    assert_one_version(target.parent, swap)


KILLED_WRITER = r"""
import sys, time
from pathlib import Path
from resources import atomic
target, swap, stage = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
if swap == "symlink":
    atomic._exchanges = lambda folder: False

def stop():
    print("stopped", flush=True)
    time.sleep(120)

if stage == "swapping":  # stopped (then killed) just before the one atomic step
    replace, exchange = atomic.os.replace, atomic._exchange
    atomic.os.replace = lambda a, b: stop() if Path(b) == target else replace(a, b)
    atomic._exchange = lambda a, b: stop() if Path(b) == target else exchange(a, b)
with atomic.atomic_directory(target, owner_only=True) as out:
    (out / "data.bin").write_bytes(b"new:1:".ljust(%d, b"x"))
    if stage == "building":
        stop()
    (out / "manifest.json").write_text('{"who": "new", "n": 1, "size": %d}')
""" % (PAYLOAD, PAYLOAD)


def stopped_writer(target, swap: str, stage: str) -> subprocess.Popen:
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target), swap, stage], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "stopped"
    return writer


def killed(writer: subprocess.Popen) -> None:
    writer.kill()  # SIGKILL: no finally block runs
    writer.wait(timeout=30)
    writer.stdout.close()


@pytest.mark.parametrize("stage", ["building", "swapping"])
def test_a_killed_writer_leaves_the_previous_version_and_its_leftovers_are_cleaned_at_start_up(tmp_path, swap, stage):
    root = tmp_path / "store"
    with ArtifactStore(root=str(root)).writing("a", "v1") as out:
        write_version(out, "old", 0)
    target = root / "a" / "v1"
    writer = stopped_writer(target, swap, stage)
    if stage == "building":  # a start-up while it still writes leaves its folder alone
        assert ArtifactStore(root=str(root)).clean_leftovers("a") == []
        assert any(e.startswith(".v1.tmp-") for e in os.listdir(target.parent))
    killed(writer)
    assert read_version(target) == ("old", 0)  # readable straight away, leftovers or not
    leftovers = [e for e in os.listdir(target.parent) if e.startswith(".v1.")]
    assert leftovers  # what the killed writer left: a temporary folder (and its lock file, when killed in the swap)

    restarted = ArtifactStore(root=str(root))
    assert restarted.read_json("a", "v1", "manifest.json") == {"who": "old", "n": 0, "size": PAYLOAD}
    assert_one_version(target.parent, swap)
    assert restarted.partitions("a") == ["v1"]


def test_a_writer_killed_while_migrating_a_plain_folder_is_rolled_forward_at_start_up(tmp_path, monkeypatch):
    """Without an exchange, a plain folder (a store written before versioned folders) becomes a symlink on its next
    rewrite, with one short gap; a writer killed in that gap is finished by the next start-up."""
    monkeypatch.setattr(atomic, "_exchanges", lambda folder: False)
    root = tmp_path / "store"
    target = root / "a" / "v1"
    target.mkdir(parents=True)
    write_version(target, "old", 0)
    killed(stopped_writer(target, "symlink", "swapping"))
    assert not os.path.lexists(target)
    restarted = ArtifactStore(root=str(root))
    assert restarted.read_json("a", "v1", "manifest.json") == {"who": "new", "n": 1, "size": PAYLOAD}
    assert_one_version(target.parent, "symlink")


def test_a_plain_folder_from_before_keeps_working_and_is_migrated_on_rewrite(tmp_path, swap):
    root = tmp_path / "store"
    legacy = root / "a" / "v1"
    legacy.mkdir(parents=True)
    write_version(legacy, "old", 0)
    store = ArtifactStore(root=str(root))
    assert store.partitions("a") == ["v1"] and store.read_json("a", "v1", "manifest.json")["who"] == "old"
    with store.writing("a", "v1") as out:
        write_version(out, "new", 1)
    assert read_version(legacy) == ("new", 1)
    assert_one_version(legacy.parent, swap)


def test_a_deleted_version_leaves_nothing_behind(tmp_path, swap):
    """Forgetting a version removes the folder the target names (a symlink's versioned folder too, not just the
    link) and what interrupted writes of it left, and nothing of another version."""
    store = ArtifactStore(root=str(tmp_path / "store"))
    for n in range(3):
        with store.writing("a", "v1") as out:
            write_version(out, "w", n)
    with store.writing("a", "v2") as out:
        write_version(out, "w", 0)
    folder = store.asset_dir("a")
    dead = folder / ".v1.tmp-0123456789abcdef"  # a killed writer's half-written copy
    dead.mkdir()
    (dead / "data.bin").write_text("personal data")
    orphan = folder / ".v1.v-fedcba9876543210"
    orphan.mkdir()
    (orphan / "data.bin").write_text("personal data")

    store.delete("a", "v1")
    assert not os.path.lexists(folder / "v1")
    assert sorted(e for e in os.listdir(folder) if not e.startswith(".v2.")) == ["v2"]
    assert store.partitions("a") == ["v2"] and not store.exists("a", "v1")
    assert read_version(folder / "v2") == ("w", 0)
    assert_one_version(folder, swap, "v2")


def test_the_store_uploads_fetches_and_lists_through_either_swap(tmp_path, swap):
    remote = Remote(f"file://{tmp_path / 'bucket'}", {})
    writer = remote.store(tmp_path / "a")
    for n in range(2):
        with writer.writing("raw_documents", "batch1") as out:
            write_version(out, "w", n)
            (out / "nested").mkdir()
            (out / "nested" / "part.txt").write_text(str(n))
    assert writer.partitions("raw_documents") == ["batch1"]  # hidden versioned folders are not partitions
    reader = remote.store(tmp_path / "b")
    fetched = reader.local("raw_documents", "batch1")
    assert read_version(fetched) == ("w", 1) and (fetched / "nested" / "part.txt").read_text() == "1"
    assert oct(fetched.stat().st_mode & 0o777) == "0o700"
    assert oct((fetched / "nested" / "part.txt").stat().st_mode & 0o777) == "0o600"
    assert_one_version(fetched.parent, swap, "batch1")
    assert_one_version(writer.asset_dir("raw_documents"), swap, "batch1")


@pytest.mark.parametrize("name", ["../../escaped.txt", "nested/../../../escaped.txt", "/ABSOLUTE", "..\\escaped.txt",
                                  "", "nested//part.txt", "./manifest.json", ".."])
def test_a_file_list_that_escapes_the_partition_is_refused_and_nothing_is_fetched(tmp_path, name):
    remote = Remote(f"file://{tmp_path / 'bucket'}", {})
    with remote.store(tmp_path / "a").writing("raw_documents", "batch1") as out:
        write_json(out, "manifest.json", {"ok": True})
    name = name.replace("/ABSOLUTE", str(tmp_path / "absolute_escape.txt"))
    remote.fs.pipe_file(f"{remote.base}/escaped.txt", b"written outside the artifact root")
    remote.fs.pipe_file(f"{remote.base}/raw_documents/batch1/{COMMITTED}",
                        json.dumps({"manifest.json": 12, name: 33}).encode())

    reader = remote.store(tmp_path / "b")
    with pytest.raises(UnsafeArtifactError) as refused:
        reader.local("raw_documents", "batch1")
    message = str(refused.value)
    assert "raw_documents[batch1]" in message and repr(name) in message
    assert not (tmp_path / "b" / "raw_documents" / "batch1").exists()
    assert not (tmp_path / "b" / "escaped.txt").exists() and not (tmp_path / "absolute_escape.txt").exists()
    assert [p for p in (tmp_path / "b").rglob("*") if p.is_file()] == []


# -- forget reaches every copy: the merge of a tainted adapter, a killed trainer's checkpoints, the request log ---
def test_forget_reaches_merges_and_leftover_checkpoints_and_purges_them_remote_first(tmp_path, remote):
    from resources.governance.forget import purge, reach

    store = remote.store(tmp_path / "a")
    with store.writing("support/instruction_dataset", "ds1") as out:
        write_table(out, "examples.parquet", pd.DataFrame({"source_doc_id": ["doc-a", "doc-b"], "text": ["x", "y"]}))
    with store.writing("support/instruction_dataset", "ds2") as out:
        write_table(out, "examples.parquet", pd.DataFrame({"source_doc_id": ["doc-b"], "text": ["y"]}))
    with store.writing("support/lora_adapter", "ad1") as out:
        write_json(out, "tuneforge_manifest.json", {"dataset_version": "ds1"})
    with store.writing("support/merged_model", "m1") as out:
        write_json(out, "merged.json", {"adapter_version": "ad1"})
    work = tmp_path / "training"
    for version, dataset in (("ad1", "ds1"), ("ad9", "ds1"), ("ad2", "ds2")):  # ad9: a run killed before it published
        (work / version).mkdir(parents=True)
        (work / version / "spec.json").write_text(json.dumps({"manifest": {"model": "support", "dataset_version": dataset}}))
        (work / version / "checkpoint-2").mkdir()
    found = reach(store, ["support"], {"doc-a"}, work)
    assert found == {"support/instruction_dataset": ["ds1"], "support/lora_adapter": ["ad1"],
                     "support/merged_model": ["m1"], "support/checkpoints": ["ad1", "ad9"]}
    removed = purge(store, found, checkpoint_root=work)
    assert sorted(removed) == sorted(f"{name}/{key}" for name, keys in found.items() for key in keys)
    assert not remote.exists("support/merged_model/m1") and not remote.exists("support/instruction_dataset/ds1")
    assert sorted(p.name for p in work.iterdir()) == ["ad2"]  # the other dataset's run is untouched
    assert reach(remote.store(tmp_path / "fresh"), ["support"], {"doc-a"}, work) == {}


def test_two_forget_requests_at_once_both_stay_on_the_list_and_a_reader_never_sees_half_a_file(tmp_path):
    from resources.ingestion.forget import ForgetList

    path = tmp_path / "policies" / "forget.yaml"
    seen, stop = [], threading.Event()

    def read():
        while not stop.is_set():
            if path.exists():
                seen.append(len(ForgetList.load(path).entries))  # raises on a half-written file

    reader = threading.Thread(target=read)
    reader.start()
    try:
        threads = [threading.Thread(target=ForgetList.append, args=(path,), kwargs={"doc_id": f"doc-{i}"}) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        stop.set()
        reader.join()
    assert ForgetList.load(path).doc_ids == {f"doc-{i}" for i in range(20)}
    assert seen and not [p for p in path.parent.iterdir() if p.name != "forget.yaml"]  # no temporary file left


def test_forget_reaches_a_golden_set_held_out_from_the_document_but_not_curated_questions(tmp_path):
    from resources.governance.forget import purge, reach

    store = ArtifactStore(root=str(tmp_path / "store"))
    with store.writing("support/corpus", "c1") as out:
        write_table(out, "documents.parquet", pd.DataFrame({"doc_id": ["doc-a", "doc-b"], "external_id": ["KB-7", None]}))
    for version, rows in (("g1", [("holdout", "KB-7")]), ("g2", [("holdout", "doc-b")]), ("g3", [("curated", "KB-7")])):
        with store.writing("support/golden_dataset", version) as out:
            write_table(out, "examples.parquet", pd.DataFrame({"source_doc_id": [r[1] for r in rows],
                                                               "origin": [r[0] for r in rows]}))
    assert reach(store, ["support"], {"doc-a"})["support/golden_dataset"] == ["g1"]  # by its external id
    assert reach(store, ["support"], {"doc-b"})["support/golden_dataset"] == ["g2"]  # by its doc_id
    purge(store, reach(store, ["support"], {"doc-a"}))
    assert store.partitions("support/golden_dataset") == ["g2", "g3"]


# -- a version made of linked parts is stored once on the remote, with the segments it links ---------------------
def test_a_version_of_linked_segment_parts_uploads_only_its_own_files_and_a_fresh_machine_reads_it_whole(tmp_path, remote):
    """Corpus and instruction-dataset versions link their segments' (and runs') files: the remote holds each such
    file once, under its segment, and a fresh machine fetching a version links them again from there — the same
    table and the same HF dataset, 20 versions later as for the first."""
    from datasets import load_from_disk

    from resources.datasets.export import save_splits
    from resources.datasets.segments import HF_EXTRA, link_instruction_hf, link_instructions
    from resources.segments import INSTRUCTION_SEGMENTS, write_typed, writing_segment
    from resources.datasets.builder import EXAMPLE_COLUMNS
    from resources.records import DROPPED_COLUMNS, frame
    from resources.storage import write_json

    writer = remote.store(tmp_path / "a")
    keys = []
    for n in range(20):  # 20 instruction segments: one run of 16 merged, 4 alone
        key = f"seg{n:02d}"
        table = frame([{"id": f"e{n}-{i}", "messages": [{"role": "user", "content": f"q{n}{i}"},
                                                        {"role": "assistant", "content": f"a{n}{i}"}],
                        "prompt": f"q{n}{i}", "answer": f"a{n}{i}", "split": "train" if i else "validation",
                        "source_doc_id": f"d{n}", "batch": f"b{n}", "origin": "corpus"} for i in range(3)], EXAMPLE_COLUMNS)
        with writing_segment(writer, f"m/{INSTRUCTION_SEGMENTS}", key) as out:
            write_typed(out / "examples.parquet", table, chats=frozenset({"messages"}))
            write_typed(out / "dropped.parquet", frame([], DROPPED_COLUMNS))
            write_json(out, "ledger.json", {"stage": "instruction_dataset", "records_in": 3, "kept": 3, "dropped": {},
                                            "quarantined": {}, "balanced": True})
            write_json(out, "counts.json", {"splits": {"train": 2, "validation": 1}, "origins": {"corpus": 3}})
            save_splits(table, ["train", "validation"], out / "hf", HF_EXTRA)
        keys.append(key)
    with writer.writing("m/instruction_dataset", "v1") as out:
        link_instructions(writer, "m", keys, out)
        link_instruction_hf(writer, "m", keys, out)
    remote.fs.invalidate_cache()
    uploaded = [p[len(remote.base) + 1:] for p in remote.fs.find(f"{remote.base}/m/instruction_dataset/v1")]
    assert not [p for p in uploaded if p.endswith((".parquet", ".arrow"))], uploaded  # each part stored once, elsewhere
    assert any(p.endswith("examples.parquet/_linked.json") for p in uploaded)

    reader = remote.store(tmp_path / "b")  # a fresh machine
    fetched = reader.read_table("m/instruction_dataset", "v1", "examples.parquet")
    assert list(fetched["id"]) == [f"e{n}-{i}" for n in range(20) for i in range(3)]
    assert sorted(p.name for p in (reader.partition_dir("m/instruction_dataset", "v1") / "examples.parquet").glob("*.parquet")) == \
        ["part-000000.parquet", "part-000016.parquet", "part-000017.parquet", "part-000018.parquet", "part-000019.parquet"]
    hf = load_from_disk(str(reader.local("m/instruction_dataset", "v1") / "hf"))
    assert list(hf["train"]["id"]) == [f"e{n}-{i}" for n in range(20) for i in (1, 2)]
    assert list(hf["validation"]["id"]) == [f"e{n}-0" for n in range(20)]


@pytest.mark.parametrize("entry", [{"part-000000.parquet": ["m/seg", "../x", "kept.parquet"]},
                                   {"../part.parquet": ["m/seg", "k1", "kept.parquet"]},
                                   {"part-000000.parquet": ["../../etc", "k1", "passwd"]},
                                   {"part-000000.parquet": ["m/seg", "k1", "../../../secret"]}, ["not", "a", "map"]])
def test_a_linked_file_list_that_escapes_the_store_is_refused_and_nothing_is_fetched(tmp_path, entry):
    from resources.storage import LINKED, UnsafeArtifactError

    remote = Remote(f"file://{tmp_path / 'bucket'}", {})
    with remote.store(tmp_path / "a").writing("m/corpus", "v1") as out:
        (out / "documents.parquet").mkdir()
        (out / "documents.parquet" / LINKED).write_text(json.dumps(entry))
    with pytest.raises(UnsafeArtifactError, match=r"m/corpus\[v1\]: documents.parquet/_linked.json"):
        remote.store(tmp_path / "b").local("m/corpus", "v1")
    assert not (tmp_path / "b" / "m" / "corpus" / "v1").exists()
