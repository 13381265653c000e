"""A run worker the kill -9 test starts and kills: one ingestion batch of the support model in a project under
argv[1] (its inbox at <argv[1]>/support/inbox), with the instance and artifacts there too."""

import sys
from pathlib import Path

import yaml

root = Path(sys.argv[1])
repo = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(repo))

from orchestration.project import load_project  # noqa: E402
from resources.ingestion.inbox import Inbox  # noqa: E402
from orchestration.workflows import open_instance  # noqa: E402
from resources.spec import ModelSpec  # noqa: E402

attributes = yaml.safe_load((repo / "models" / "support" / "defs.yaml").read_text())["attributes"]
attributes.update(inbox=str(root / "support" / "inbox"), feedback=None)
project = load_project(repo, root, models=[ModelSpec.model_validate(attributes)], inbox=Inbox(forget_list=str(root / "policies" / "forget.yaml")))
instance = open_instance(project)
instance.add_dynamic_partitions("support_batches", ["support_qa.csv"])
print("START", flush=True)
project.definitions.resolve_job_def("support_ingest_batch").execute_in_process(instance=instance, partition_key="support_qa.csv")
