"""The project's shared resources: the embedded default runs every engine on a laptop CPU, offline, with all
state under one work folder. Scale out by configuration, not code: override any of these (an external vLLM, a
Postgres request log, an object store, a GPU trainer pod) in `build_definitions(**overrides)`; per model
settings live in its YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from resources.artifacts import ArtifactIOManager
from resources.curation.curator import TextCurator
from resources.evaluation.evaluator import Evaluator
from resources.evaluation.judge import JudgeModel
from resources.knowledge.teacher import TeacherModel
from resources.ingestion.inbox import Inbox
from resources.models.base_model import BaseModelSource
from resources.monitoring.alerts import AlertSink
from resources.redaction.redactor import PiiRedactor
from resources.requestlog import RequestLogSource
from resources.retrieval.index import KnowledgeIndexer
from resources.serving.gateway_server import GatewayServer
from resources.serving.vllm_server import VllmServer
from resources.storage import ArtifactStore
from resources.training.fine_tuner import FineTuner


def state_dir(workdir: str | Path) -> Path:
    """Where a project keeps its artifacts, serving state, checkpoints and alerts."""
    return Path(workdir).resolve() / ".tuneforge"


def shared_resources(project: str | Path = ".", workdir: str | Path | None = None, **overrides: Any) -> dict[str, Any]:
    """Resources every model of the project shares; `project` holds `policies/` (the forget list), `workdir`
    (default: the project) the state."""
    project = Path(project).resolve()
    state = state_dir(workdir or project)
    policy = project / "policies" / "redaction.yaml"
    if not policy.is_file():  # a project without its own default policy uses the one tuneforge ships
        policy = Path(__file__).resolve().parent.parent / "policies" / "redaction.yaml"
    resources: dict[str, Any] = {
        "store": ArtifactStore(root=str(state / "artifacts")),
        "inbox": Inbox(forget_list=str(project / "policies" / "forget.yaml")),
        "curator": TextCurator(),
        "redactor": PiiRedactor(policy_path=str(policy)),
        "model_source": BaseModelSource(),
        "fine_tuner": FineTuner(work_dir=str(state / "training")),
        "evaluator": Evaluator(),
        "judge": JudgeModel(),  # unset: LLM-as-judge metrics are reported as not run
        "teacher": TeacherModel(cache_dir=str(state / "teacher_cache")),  # unset: the offline strategies run
        "indexer": KnowledgeIndexer(),
        "vllm": VllmServer(state_dir=str(state / "serving")),
        "gateway": GatewayServer(state_dir=str(state / "serving")),
        "request_log": RequestLogSource(database_url=f"sqlite:///{state / 'serving' / 'requests.db'}"),
        "alerts": AlertSink(path=str(state / "alerts" / "run_failures.jsonl")),
    }
    resources.update(overrides)
    resources.setdefault("io_manager", ArtifactIOManager(store=resources["store"]))
    return resources
