"""The artifact store with a remote system of record (fsspec): what one machine commits, another reads;
an interrupted upload is never read."""

import pandas as pd
import pytest

from resources.storage import COMMITTED, ArtifactNotFoundError, ArtifactStore, write_json, write_table


@pytest.fixture
def remote(tmp_path):
    return f"file://{tmp_path / 'bucket'}"  # fsspec's local backend: the same code path as s3:// or gs://


def test_a_fresh_machine_reads_what_another_committed(tmp_path, remote):
    writer = ArtifactStore(root=str(tmp_path / "a"), remote_url=remote)
    with writer.writing("instruction_dataset", "v1") as out:
        write_table(out, "examples.parquet", pd.DataFrame({"id": ["e1", "e2"]}))
        write_json(out, "manifest.json", {"batches": ["b1"]})
    writer.set_latest("instruction_dataset", "v1")

    reader = ArtifactStore(root=str(tmp_path / "b"), remote_url=remote)
    assert reader.latest("instruction_dataset") == "v1"
    assert reader.partitions("instruction_dataset") == ["v1"]
    assert list(reader.read_table("instruction_dataset", "v1", "examples.parquet")["id"]) == ["e1", "e2"]
    assert reader.read_json("instruction_dataset", "v1", "manifest.json") == {"batches": ["b1"]}
    assert oct((tmp_path / "b" / "instruction_dataset" / "v1").stat().st_mode & 0o777) == "0o700"

    with writer.writing("instruction_dataset", "v1") as out:  # rewritten: the new content wins everywhere
        write_table(out, "examples.parquet", pd.DataFrame({"id": ["e3"]}))
    assert list(ArtifactStore(root=str(tmp_path / "c"), remote_url=remote)
                .read_table("instruction_dataset", "v1", "examples.parquet")["id"]) == ["e3"]


def test_an_interrupted_upload_is_ignored(tmp_path, remote):
    writer = ArtifactStore(root=str(tmp_path / "a"), remote_url=remote)
    with writer.writing("raw_documents", "batch1") as out:
        write_table(out, "documents.parquet", pd.DataFrame({"doc_id": ["d1"]}))
    (tmp_path / "bucket" / "raw_documents" / "batch2").mkdir(parents=True)  # files, but no seal
    (tmp_path / "bucket" / "raw_documents" / "batch2" / "documents.parquet").write_bytes(b"half")
    reader = ArtifactStore(root=str(tmp_path / "b"), remote_url=remote)
    assert reader.partitions("raw_documents") == ["batch1"]
    assert not reader.exists("raw_documents", "batch2")
    assert (tmp_path / "bucket" / "raw_documents" / "batch1" / COMMITTED).exists()
    with pytest.raises(ArtifactNotFoundError):
        reader.read_table("raw_documents", "batch2")


def test_a_failed_write_uploads_nothing(tmp_path, remote):
    store = ArtifactStore(root=str(tmp_path / "a"), remote_url=remote)
    with pytest.raises(RuntimeError):
        with store.writing("eval_report", "v1") as out:
            write_json(out, "scores.json", {})
            raise RuntimeError("killed half-way")
    assert store.partitions("eval_report") == [] and not (tmp_path / "bucket" / "eval_report").exists()
