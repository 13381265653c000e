"""A run worker the deployment kill -9 test starts and kills: `deploy_adapter.py CONFIG_JSON` deploys the model's
latest promoted adapter with the vLLM and gateway settings given, in the project state at CONFIG_JSON's workdir."""

import json
import sys
from pathlib import Path

repo = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(repo))

from orchestration import workflows  # noqa: E402
from orchestration.project import load_project  # noqa: E402
from resources.ingestion.inbox import Inbox  # noqa: E402
from resources.serving.gateway_server import GatewayServer  # noqa: E402
from resources.serving.vllm_server import VllmServer  # noqa: E402
from resources.spec import ModelSpec  # noqa: E402

cfg = json.loads(sys.argv[1])
spec = ModelSpec.model_validate(cfg["spec"])
project = load_project(repo, cfg["workdir"], models=[spec], inbox=Inbox(forget_list=str(Path(cfg["workdir"]) / "policies" / "forget.yaml")), vllm=VllmServer(**cfg["vllm"]), gateway=GatewayServer(**cfg["gateway"]))
instance = workflows.open_instance(project)
job = project.definitions.resolve_job_def(f"{spec.name}_deploy_adapter")
result = job.execute_in_process(instance=instance, raise_on_error=False, op_selection=[f"{spec.name}__deployed_endpoint"])
print("OK" if result.success else "FAILED")
