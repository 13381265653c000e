"""Another run that trains an adapter while a test's run is under way: `train_adapter.py WORKDIR SPEC_JSON` trains the
model once more (one step, another seed: a newer adapter version) in the same project state and instance, and prints
`TRAINED <version>`."""

import sys
from pathlib import Path

repo = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(repo))

from orchestration import workflows  # noqa: E402
from orchestration.project import load_project  # noqa: E402
from resources.ingestion.inbox import Inbox  # noqa: E402
from resources.spec import ModelSpec  # noqa: E402

workdir, spec = Path(sys.argv[1]), ModelSpec.model_validate_json(sys.argv[2])
project = load_project(repo, workdir, models=[spec], inbox=Inbox(forget_list=str(workdir / "policies" / "forget.yaml")))
instance = workflows.open_instance(project)
outcome, _ = workflows.run_job(project, instance, spec, "train_adapter",
                               {f"{spec.name}__lora_adapter": {"config": {"max_steps": 1, "seed": 7}}})
outcome.raise_for_failure()
print("TRAINED", outcome.artifacts[f"{spec.name}/lora_adapter"])
