"""The embedded default configuration: every engine runs on a laptop CPU, offline.

Scale out by configuration, not code: override these in `Definitions` (or per run in the launchpad).
"""

from __future__ import annotations

from typing import Any

from resources.curation.curator import TextCurator
from resources.evaluation.evaluator import Evaluator
from resources.evaluation.feedback import FeedbackSource
from resources.evaluation.gate import PromotionPolicy
from resources.evaluation.judge import JudgeModel
from resources.datasets.policy import DatasetPolicy
from resources.ingestion.inbox import Inbox
from resources.models.base_model import BaseModelSource
from resources.monitoring.alerts import AlertSink
from resources.monitoring.drift import MonitoringPolicy
from resources.monitoring.traffic import RequestLogSource
from resources.redaction.redactor import PiiRedactor
from resources.retrieval.index import KnowledgeIndexer
from resources.serving.gateway_server import GatewayServer
from resources.serving.vllm_server import VllmServer
from resources.storage import ArtifactStore
from resources.training.fine_tuner import FineTuner


def default_resources(**overrides: Any) -> dict[str, Any]:
    resources: dict[str, Any] = {
        "inbox": Inbox(),
        "store": ArtifactStore(),
        "curator": TextCurator(),
        "redactor": PiiRedactor(),
        "datasets": DatasetPolicy(),
        "model_source": BaseModelSource(),
        "fine_tuner": FineTuner(),
        "evaluator": Evaluator(),
        "judge": JudgeModel(),  # unset: LLM-as-judge metrics are reported as not run
        "feedback": FeedbackSource(),
        "indexer": KnowledgeIndexer(),
        "policy": PromotionPolicy(),
        "vllm": VllmServer(),
        "gateway": GatewayServer(),
        "request_log": RequestLogSource(),
        "monitoring": MonitoringPolicy(),
        "alerts": AlertSink(),
    }
    resources.update(overrides)
    return resources
