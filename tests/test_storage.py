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
