"""The production profile: the Dagster instance on a real PostgreSQL server (dagster-postgres) and the
artifact store mirrored to an S3 bucket (a real S3 HTTP server on 127.0.0.1, moto's), running the data
stages, a (tiny) training run and the lineage report against them."""

import hashlib
import shutil

import pytest

from helpers import ROOT, SAMPLE, project_for, sample_model
from postgres_server import postgres_server
from servers.s3_server import s3_server

pytestmark = pytest.mark.slow


def test_data_stages_training_and_lineage_on_postgres(tmp_path, tiny_model, monkeypatch):
    from dagster import DagsterInstance
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    from orchestration import workflows
    from resources.governance.lineage import LineageReader, source_files
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
        instance = DagsterInstance.from_config(str(home))
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)

        spec = sample_model("support", tmp_path / "data", copy_data=False, base_model=str(tiny_model), feedback=None,
                            training={"max_steps": 2, "max_length": 64, "eval_steps": 1})
        inbox = tmp_path / "data" / "support" / "inbox"
        for name in ("support_qa.csv", "kb_articles.jsonl"):
            shutil.copy(SAMPLE / "support" / "inbox" / name, inbox / name)
        project = project_for(tmp_path, [spec], store=ArtifactStore(root=str(tmp_path / "artifacts"), **bucket),
                              fine_tuner=FineTuner(work_dir=str(tmp_path / "work")))
        batches = workflows.ingest(project, instance, spec, lambda _: None)
        assert sorted(batches) == ["kb_articles.jsonl", "support_qa.csv"] and all(o.success for o in batches.values())
        datasets = workflows.run_job(project, instance, spec, "build_datasets")[0].raise_for_failure()
        training = workflows.run_job(project, instance, spec, "train_adapter")[0].raise_for_failure()

        adapter = training.artifacts["support/lora_adapter"]
        report = LineageReader(instance).report(model="support", adapter_version=adapter)
        expected = {hashlib.sha256((inbox / n).read_bytes()).hexdigest() for n in ("support_qa.csv", "kb_articles.jsonl")}
        assert {f["sha256"] for f in source_files(report)} == expected
        assert all(b["redacted_documents"]["metadata"]["redaction_policy"].startswith("default@") for b in report["batches"])
        assert report["dataset"]["data_version"] == datasets.artifacts["support/instruction_dataset"]
        # the bucket holds every sealed artifact: a fresh machine reads them, named by the recorded materializations
        fresh = ArtifactStore(root=str(tmp_path / "elsewhere"), **bucket)
        assert sorted(k.split("@")[0] for k in fresh.partitions("support/redacted_documents")) == ["kb_articles.jsonl", "support_qa.csv"]
        assert (fresh.local("support/lora_adapter", adapter) / "adapter_config.json").is_file()
        dataset = datasets.artifacts["support/instruction_dataset"]
        assert len(fresh.read_table("support/instruction_dataset", dataset, "examples.parquet")) > 0
        instance.dispose()
