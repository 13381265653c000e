"""The production profile: the Dagster instance on a real PostgreSQL server (dagster-postgres) and the
artifact store mirrored to an S3 bucket (a real S3 HTTP server on 127.0.0.1, moto's), running the data
stages, a (tiny) training run and the lineage report against them."""

import hashlib
import os
import shutil

import pytest

from conftest import ROOT, SAMPLE
from postgres_server import postgres_server
from servers.s3_server import s3_server

pytestmark = pytest.mark.slow


def test_data_stages_training_and_lineage_on_postgres(tmp_path, tiny_model, monkeypatch):
    from dagster import DagsterInstance
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    from orchestration.cli import run_pipeline
    from orchestration.definitions import build_definitions
    from resources.datasets.policy import DatasetPolicy
    from resources.evaluation.feedback import FeedbackSource
    from resources.governance.lineage import LineageReader, source_files
    from resources.ingestion.inbox import Inbox
    from resources.models.base_model import BaseModelSource
    from resources.storage import ArtifactStore
    from resources.training.fine_tuner import FineTuner

    with postgres_server() as pg, s3_server() as s3:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3["key"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3["secret"])
        monkeypatch.setenv("AWS_DEFAULT_REGION", s3["region"])
        bucket = {"remote_url": f"s3://{s3['bucket']}/tuneforge", "storage_options": {"endpoint_url": s3["endpoint_url"]}}
        monkeypatch.setenv("TUNEFORGE_PG_URL", f"postgresql+psycopg2://{pg['user']}:{pg['password']}@{pg['host']}:{pg['port']}/{pg['db']}")
        home = tmp_path / "home"
        home.mkdir()
        shutil.copy(ROOT / "config" / "dagster" / "dagster.postgres.yaml", home / "dagster.yaml")
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        instance = DagsterInstance.get()
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)

        inbox = tmp_path / "inbox"
        inbox.mkdir()
        for name in ("support_qa.csv", "kb_articles.jsonl"):
            shutil.copy(SAMPLE / "inbox" / name, inbox / name)
        defs = build_definitions(
            inbox=Inbox(path=str(inbox), settle_seconds=0, forget_list=str(tmp_path / "forget.yaml")),
            store=ArtifactStore(root=str(tmp_path / "artifacts"), **bucket),
            feedback=FeedbackSource(path=str(tmp_path / "feedback"), endpoint_database_url=None),
            datasets=DatasetPolicy(golden_paths=[str(SAMPLE / "golden.jsonl")]),
            model_source=BaseModelSource(model=str(tiny_model)),
            fine_tuner=FineTuner(work_dir=str(tmp_path / "work")),
        )
        summary = run_pipeline(instance, defs, log=lambda *_: None)
        assert sorted(summary["batches"]) == ["kb_articles.jsonl", "support_qa.csv"]
        run = defs.resolve_job_def("train_adapter").execute_in_process(
            instance=instance, run_config={"ops": {"lora_adapter": {"config": {"max_steps": 2, "max_length": 64, "eval_steps": 1}}}})
        assert run.success

        store = defs.resources["store"]
        report = LineageReader(instance).report(adapter_version=store.latest("lora_adapter"))
        expected = {hashlib.sha256((inbox / n).read_bytes()).hexdigest() for n in ("support_qa.csv", "kb_articles.jsonl")}
        assert {f["sha256"] for f in source_files(report)} == expected
        assert all(b["redacted_documents"]["metadata"]["redaction_policy"].startswith("default@") for b in report["batches"])
        assert report["dataset"]["data_version"] == store.latest("instruction_dataset")
        # the bucket holds every sealed artifact: a fresh machine reads them
        fresh = ArtifactStore(root=str(tmp_path / "elsewhere"), **bucket)
        assert fresh.partitions("redacted_documents") == ["kb_articles.jsonl", "support_qa.csv"]
        assert fresh.latest("lora_adapter") == store.latest("lora_adapter")
        assert (fresh.local("lora_adapter", fresh.latest("lora_adapter")) / "adapter_config.json").is_file()
        assert len(fresh.read_table("instruction_dataset", fresh.latest("instruction_dataset"), "examples.parquet")) > 0
        instance.dispose()
