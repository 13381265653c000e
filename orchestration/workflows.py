"""What a user runs outside the UI, as functions that return typed results: run a project's models through the
graph (what the sensors and the daemon would do, executed in this process), scaffold a project, forget a
document, roll back, issue keys. `cli.py` parses arguments and prints; nothing here prints or exits."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from dagster import DagsterInstance, build_sensor_context

from orchestration.project import Project, ProjectError, load_project, refuse_legacy_instance
from resources.artifacts import ARTIFACT_METADATA
from resources.evaluation.gate import GateDecision
from resources.serving.deploy import BASE_ALIAS
from resources.spec import ModelSpec

UNTIL = ("data", "training", "evaluation", "deployment")
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
LOUD = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
REPO = Path(__file__).resolve().parent.parent
Log = Callable[[str], None]


class WorkflowError(RuntimeError):
    """A stage failed; `outcome` says which steps and checks, with their own messages."""

    def __init__(self, message: str, outcome: "RunOutcome | None" = None):
        super().__init__(message)
        self.outcome = outcome


# -- typed results -------------------------------------------------------------------------------------------
@dataclass
class RunOutcome:
    job: str
    run_id: str
    success: bool
    failed_steps: list[dict[str, str]] = field(default_factory=list)  # step, message
    failed_checks: list[dict[str, Any]] = field(default_factory=list)  # asset, check, blocking, metadata
    artifacts: dict[str, str] = field(default_factory=dict)  # asset key -> artifact key materialized by the run

    @classmethod
    def of(cls, job: str, result) -> "RunOutcome":
        failed_steps = [{"step": e.step_key, "message": _root_message(e.event_specific_data.error)}
                        for e in result.all_events if e.is_step_failure]
        if not result.success and not failed_steps:  # the run failed outside a step (a resource that cannot start)
            failed_steps = [{"step": "(run)", "message": _root_message(getattr(e.event_specific_data, "error", None))
                             or e.message or ""} for e in result.all_events
                            if e.event_type_value in ("RESOURCE_INIT_FAILURE", "RUN_FAILURE")][:1]
        failed_checks = [{"asset": e.asset_key.to_user_string(), "check": e.check_name, "blocking": e.severity.value == "ERROR",
                          "metadata": {k: str(getattr(v, "value", v))[:500] for k, v in e.metadata.items()}}
                         for e in result.get_asset_check_evaluations() if not e.passed]
        artifacts = {}
        for event in result.get_asset_materialization_events():
            m = event.materialization
            if ARTIFACT_METADATA in m.metadata:
                artifacts[m.asset_key.to_user_string() + (f"[{m.partition}]" if m.partition else "")] = str(m.metadata[ARTIFACT_METADATA].value)
        return cls(job, result.run_id, result.success, failed_steps, failed_checks, artifacts)

    def message(self) -> str:
        lines = [f"{self.job} failed (run {self.run_id}):"]
        lines += [f"  check {c['asset']}:{c['check']}: " + "; ".join(f"{k}={v}" for k, v in c["metadata"].items()
                                                              if k in ("failures", "problems", "residual_by_entity", "reasons"))
                  for c in self.failed_checks if c["blocking"]]
        lines += [f"  step {s['step']}: {s['message']}" for s in self.failed_steps]
        return "\n".join(lines)

    def raise_for_failure(self) -> "RunOutcome":
        if not self.success:
            raise WorkflowError(self.message(), self)
        return self


@dataclass
class ModelRun:
    """What one model went through in `run_project`."""

    model: str
    batches: dict[str, RunOutcome] = field(default_factory=dict)
    datasets: RunOutcome | None = None
    training: RunOutcome | None = None
    evaluation: RunOutcome | None = None
    decision: GateDecision | None = None
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    deployment: RunOutcome | None = None
    endpoint: dict[str, Any] | None = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


@dataclass
class ProjectRun:
    project: str
    workdir: str
    until: str
    models: list[ModelRun]
    summary_path: str | None = None

    @property
    def failed(self) -> bool:
        return any(m.failed for m in self.models)


# -- the instance --------------------------------------------------------------------------------------------
def open_instance(project: Project) -> DagsterInstance:
    """The project-local Dagster instance (`<workdir>/.dagster`, telemetry off), the one `dagster dev` reads
    with DAGSTER_HOME set there. Nothing in the process environment is changed."""
    home = project.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        shutil.copy(REPO / "config" / "dagster" / "dagster.yaml", config)
    instance = DagsterInstance.from_config(str(home))
    refuse_legacy_instance(instance, project.workdir)
    return instance


# -- stages of one model ---------------------------------------------------------------------------------------
def ingest(project: Project, instance: DagsterInstance, spec: ModelSpec, log: Log) -> dict[str, RunOutcome]:
    """Tick the model's inbox sensor once and run what it requests: exactly what the daemon does, in this process
    (the runs carry the sensor's tags and run keys, so a daemon started later does not repeat them)."""
    defs = project.definitions
    sensor = defs.resolve_sensor_def(f"{spec.name}_inbox_sensor")
    cursor_file = Path(instance.root_directory) / f"{spec.name}_inbox_sensor.cursor"
    cursor = cursor_file.read_text() if cursor_file.exists() else None
    shared = defs.resources["inbox"]  # a new resource (Dagster re-reads a resource's config, not a model_copy's)
    inbox = type(shared)(**{**shared.model_dump(), "settle_seconds": 0})
    with build_sensor_context(instance=instance, cursor=cursor, resources={"inbox": inbox}) as context:
        result = sensor(context)
    outcomes: dict[str, RunOutcome] = {}
    if not hasattr(result, "run_requests"):
        return outcomes
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    if result.cursor:
        cursor_file.write_text(result.cursor)
    job = defs.resolve_job_def(f"{spec.name}_ingest_batch")
    for request in result.run_requests:
        log(f"{spec.name}: ingesting batch {request.partition_key} ...")
        tags = {**request.tags, "dagster/sensor_name": sensor.name, "dagster/run_key": request.run_key}
        run = job.execute_in_process(instance=instance, partition_key=request.partition_key, tags=tags,
                                     raise_on_error=False, run_config=QUIET)
        outcomes[request.partition_key] = RunOutcome.of(job.name, run)
    return outcomes


def run_job(project: Project, instance: DagsterInstance, spec: ModelSpec, job: str, config: dict | None = None,
            tags: dict | None = None, loud: bool = False) -> tuple[RunOutcome, Any]:
    name = f"{spec.name}_{job}"
    result = project.definitions.resolve_job_def(name).execute_in_process(
        instance=instance, raise_on_error=False, tags=tags or {},
        run_config={**(LOUD if loud else QUIET), **({"ops": config} if config else {})})
    return RunOutcome.of(name, result), result


def train(project: Project, instance: DagsterInstance, spec: ModelSpec, max_steps: int = -1) -> RunOutcome:
    config = {f"{spec.name}__lora_adapter": {"config": {"step_cap": max_steps}}} if max_steps > 0 else None  # a cap
    return run_job(project, instance, spec, "train_adapter", config, loud=True)[0]


def evaluate(project: Project, instance: DagsterInstance, spec: ModelSpec) -> tuple[RunOutcome, GateDecision | None, dict]:
    """Run the evaluation; a blocked promotion is a decision to report, not a failure."""
    outcome, _ = run_job(project, instance, spec, "evaluate_adapter")
    decision_key = outcome.artifacts.get(f"{spec.name}/promotion_decision")
    if decision_key is None:
        outcome.raise_for_failure()
        raise WorkflowError(f"{spec.name}: the evaluation made no promotion decision", outcome)
    store = project.definitions.resources["store"]
    decision = GateDecision.from_dict(store.read_json(f"{spec.name}/promotion_decision", decision_key, "decision.json"))
    scores = store.read_json(f"{spec.name}/eval_report", outcome.artifacts[f"{spec.name}/eval_report"], "scores.json")["scores"]
    return outcome, decision, scores


def deploy(project: Project, instance: DagsterInstance, spec: ModelSpec,
           adapter_version: str | None = None) -> tuple[RunOutcome, dict | None]:
    """Run the deployment; the endpoint record, or None when the run failed (the outcome says why)."""
    config = {f"{spec.name}__deployed_endpoint": {"config": {"adapter_version": adapter_version}}} if adapter_version else None
    outcome, _ = run_job(project, instance, spec, "deploy_adapter", config, loud=True)
    if not outcome.success:
        return outcome, None
    store = project.definitions.resources["store"]
    endpoint = store.read_json(f"{spec.name}/deployed_endpoint", outcome.artifacts[f"{spec.name}/deployed_endpoint"], "endpoint.json")
    return outcome, endpoint


# -- a whole project -------------------------------------------------------------------------------------------
def run_project(project: Project, until: str = "deployment", max_steps: int = -1, models: list[str] | None = None,
                log: Log = lambda _: None) -> ProjectRun:
    """Every model (or those named) through the graph up to `until`; a failed model does not stop the others.
    Writes `<workdir>/summary.json`."""
    if until not in UNTIL:
        raise ValueError(f"until must be one of {', '.join(UNTIL)}, not {until!r}")
    instance = open_instance(project)
    specs = [project.model(n) for n in models] if models else project.models
    runs: list[ModelRun] = []
    started = prestart_serving(project, specs, log) if until == "deployment" else []
    try:
        for spec in specs:
            runs.append(_run_model(project, instance, spec, until, max_steps, log))
    finally:
        instance.dispose()
        if started and not any(run.endpoint for run in runs):  # nothing went into service: nothing to keep running
            for server in started:
                server.stop()
    result = ProjectRun(str(project.root), str(project.workdir), until, runs)
    result.summary_path = str(write_summary(project, result))
    return result


def prestart_serving(project: Project, specs: list[ModelSpec], log: Log = lambda _: None) -> list:
    """Start, in the background, the vLLM of each base model these models will be served on as LoRAs (not
    one already running), so that its start-up (about a minute on CPU, longer on GPU) overlaps ingestion and
    training instead of adding to the deployment. The deployment waits for the same server. Returns the servers
    started; a failure here is only logged (the deployment reports it properly)."""
    resources = project.definitions.resources
    started = []
    for spec in specs:
        if spec.serving.serve_merged or spec.training.method == "full":
            continue
        try:
            source = resources["model_source"].process_config_and_initialize()
            base = str(source.for_model(spec.base_model, spec.base_model_revision).resolve().path)
            vllm = resources["vllm"].process_config_and_initialize().for_base(base)
            if vllm.launch(base, served_name=BASE_ALIAS):
                log(f"{spec.name}: starting vLLM on {spec.base_model} in the background (for the deployment)")
                started.append(vllm)
        except Exception as err:  # noqa: BLE001 - reported again, with its context, by the deployment itself
            log(f"{spec.name}: vLLM not started early ({err})")
    return started


def _run_model(project: Project, instance: DagsterInstance, spec: ModelSpec, until: str, max_steps: int, log: Log) -> ModelRun:
    run = ModelRun(spec.name)
    try:
        run.batches = ingest(project, instance, spec, log)
        bad = [o for o in run.batches.values() if not o.success]
        for outcome in bad:
            log(f"{spec.name}: {outcome.message()}")  # one bad batch never stops the others
        log(f"{spec.name}: building the corpus and datasets ...")
        run.datasets = run_job(project, instance, spec, "build_datasets")[0]
        run.datasets.raise_for_failure()
        if until == "data":
            return run
        log(f"{spec.name}: fine-tuning (base_model -> lora_adapter); progress every few steps ...")
        run.training = train(project, instance, spec, max_steps)
        run.training.raise_for_failure()
        if until == "training":
            return run
        log(f"{spec.name}: evaluating base, candidate and champion on the golden set, probing safety, deciding ...")
        run.evaluation, run.decision, run.scores = evaluate(project, instance, spec)
        if until == "evaluation" or not run.decision.promote:
            return run
        log(f"{spec.name}: deploying (vLLM multi-LoRA behind the guardrail gateway; vLLM start-up takes about a minute) ...")
        run.deployment, run.endpoint = deploy(project, instance, spec)
        run.deployment.raise_for_failure()
    except (WorkflowError, ProjectError) as err:
        run.error = str(err)
    return run


def file_rows(store, run: ModelRun) -> list[dict[str, Any]]:
    """Per raw file of the model's batches: its records, the documents it keeps in the corpus, its passages and
    examples, and every record it lost with the stage and reason (quarantined at reading or redaction, dropped at
    cleaning or de-duplication) — what a batch's ledger sums up, file by file. A file whose batch this run did not
    read (it was ingested before) has `records` None."""
    import pandas as pd

    def table(asset: str, key: str | None, name: str, columns: list[str]) -> pd.DataFrame:
        if not key or not store.exists(f"{run.model}/{asset}", key, name):
            return pd.DataFrame(columns=columns)
        frame = store.read_table(f"{run.model}/{asset}", key, name)
        return frame[[c for c in columns if c in frame.columns]]

    def pairs(frame: pd.DataFrame):
        return zip(*(frame[c].tolist() for c in frame.columns)) if len(frame.columns) == 2 else iter(())

    rows: dict[str, dict[str, Any]] = {}
    where: dict[str, str] = {}  # doc_id -> file

    def row(path: str) -> dict[str, Any]:  # records: None for a file whose batch this run did not read
        return rows.setdefault(path, {"file": path, "records": None, "kept": 0, "passages": 0, "examples": 0, "lost": {}})

    def lose(path: str, stage: str, reason: str, n: int = 1) -> None:
        lost = row(path)["lost"]
        lost[f"{stage}: {reason}"] = lost.get(f"{stage}: {reason}", 0) + n

    for batch, outcome in run.batches.items():
        keys = {a: outcome.artifacts.get(f"{run.model}/{a}[{batch}]") for a in ("raw_documents", "cleaned_documents",
                                                                              "redacted_documents")}
        raw = table("raw_documents", keys["raw_documents"], "documents.parquet", ["doc_id", "source_path"])
        where.update(zip(raw["doc_id"], raw["source_path"]))
        if keys["raw_documents"]:
            for entry in store.read_json(f"{run.model}/raw_documents", keys["raw_documents"], "files.json"):
                row(entry["path"])["records"] = entry.get("records_in", entry.get("records", 0))
                if entry.get("duplicate_of"):
                    lose(entry["path"], "reading", f"exact_duplicate of {entry['duplicate_of']}", entry.get("records_in", 1))
        for path, reason in pairs(table("raw_documents", keys["raw_documents"], "quarantine.parquet",
                                        ["source_path", "reason"])):
            lose(path, "reading", reason)
        for doc_id, reason in pairs(table("cleaned_documents", keys["cleaned_documents"], "dropped.parquet",
                                          ["doc_id", "reason"])):
            lose(where.get(doc_id, f"(document {doc_id})"), "cleaning", reason)
        for path, reason in pairs(table("redacted_documents", keys["redacted_documents"], "quarantine.parquet",
                                        ["source_path", "reason"])):
            lose(path, "redaction", reason)
    datasets = run.datasets.artifacts if run.datasets is not None else {}
    corpus = datasets.get(f"{run.model}/corpus")
    if corpus:
        for path in table("corpus", corpus, "documents.parquet", ["source_path"])["source_path"]:
            row(path)["kept"] += 1
        for doc_id, reason in pairs(table("corpus", corpus, "dropped.parquet", ["doc_id", "reason"])):
            lose(where.get(doc_id, f"(document {doc_id} of an earlier batch)"), "corpus", reason)
    for asset, name, column in (("document_chunks", "chunks.parquet", "passages"),
                                ("knowledge_examples", "examples.parquet", "examples")):
        key = datasets.get(f"{run.model}/{asset}")
        for path in table(asset, key, name, ["source_path"])["source_path"]:
            if path in rows:
                rows[path][column] += 1
    return sorted(rows.values(), key=lambda r: r["file"])


def write_summary(project: Project, result: ProjectRun) -> Path:
    """`summary.json`: per model, the per-stage ledgers, example counts, scores, decision and failures."""
    store = project.definitions.resources["store"]
    models = {}
    for run in result.models:
        entry: dict[str, Any] = {"error": run.error, "batches": {}, "failed_steps": []}
        for batch, outcome in run.batches.items():
            ledgers = {}
            for asset in ("raw_documents", "cleaned_documents", "redacted_documents"):
                key = outcome.artifacts.get(f"{run.model}/{asset}[{batch}]")
                if key:
                    ledgers[asset] = store.read_json(f"{run.model}/{asset}", key, "ledger.json")
            entry["batches"][batch] = {"run_id": outcome.run_id, "success": outcome.success, "ledgers": ledgers,
                                       "failed_checks": outcome.failed_checks}
        for outcome in [*run.batches.values(), run.datasets, run.training, run.evaluation, run.deployment]:
            if outcome is not None:
                entry["failed_steps"] += [{"job": outcome.job, "run_id": outcome.run_id, **s} for s in outcome.failed_steps]
        if run.datasets is not None:
            entry["datasets"] = _dataset_summary(store, run.model, run.datasets)
        entry["files"] = file_rows(store, run)
        if run.training is not None and f"{run.model}/lora_adapter" in run.training.artifacts:
            key = run.training.artifacts[f"{run.model}/lora_adapter"]
            entry["training"] = {"adapter_version": key,
                                 **store.read_json(f"{run.model}/lora_adapter", key, "tuneforge_manifest.json")["stats"]}
        if run.decision is not None:
            entry["evaluation"] = {"scores": run.scores, "decision": run.decision.verdict, "reasons": run.decision.reasons,
                                   "adapter_version": run.decision.adapter_version}
        if run.endpoint is not None:
            entry["deployment"] = {k: run.endpoint.get(k) for k in ("name", "gateway_url", "adapter_version", "served_model",
                                                                   "deployed_at", "previous_version")}
        models[run.model] = entry
    path = project.workdir / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"project": result.project, "workdir": result.workdir, "until": result.until,
                                "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                                "failed": result.failed, "models": models}, indent=2, default=str))
    return path


def _dataset_summary(store, model: str, outcome: RunOutcome) -> dict:
    out: dict[str, Any] = {}
    corpus = outcome.artifacts.get(f"{model}/corpus")
    if corpus:
        out["corpus_ledger"] = store.read_json(f"{model}/corpus", corpus, "ledger.json")
        out["excluded_batches"] = store.read_json(f"{model}/corpus", corpus, "batches.json")["excluded"]
    dataset = outcome.artifacts.get(f"{model}/instruction_dataset")
    if dataset:
        examples = store.read_table(f"{model}/instruction_dataset", dataset, "examples.parquet")
        out["instruction_dataset"] = {"version": dataset, **examples["split"].value_counts().to_dict(),
                                      "ledger": store.read_json(f"{model}/instruction_dataset", dataset, "ledger.json")}
    golden = outcome.artifacts.get(f"{model}/golden_dataset")
    if golden:
        out["golden_examples"] = len(store.read_table(f"{model}/golden_dataset", golden, "examples.parquet"))
    return out


# -- the demo and a user's own folder --------------------------------------------------------------------------
def seed_sample(project: Project, sample: Path, log: Log) -> dict[str, list[str]]:
    """Copy each model's sample batches (`<sample>/<model>/inbox`) and reviewer files into its folders."""
    copied = {}
    for spec in project.models:
        copied[spec.name] = _copy_missing(sample / spec.name / "inbox", Path(spec.inbox))
        if spec.feedback:
            _copy_missing(sample / spec.name / "feedback", Path(spec.feedback))
        log(f"{spec.name}: inbox {spec.inbox}: added {copied[spec.name] or 'nothing new'}")
    return copied


def _copy_missing(source: Path, target: Path) -> list[str]:
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for entry in sorted(source.iterdir()) if source.is_dir() else []:
        if not (target / entry.name).exists():
            (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, target / entry.name)
            copied.append(entry.name)
    return copied


def model_name_for(folder: Path) -> str:
    """A valid model name from a folder name (`My Docs-2026` -> `my_docs_2026`)."""
    name = re.sub(r"[^a-z0-9_]+", "_", folder.resolve().name.lower()).strip("_") or "model"
    return ("m_" + name if not name[0].isalpha() else name)[:32]


def folder_project(inbox: Path, workdir: Path, golden: list[Path], name: str | None = None) -> Project:
    """A one-model project in `workdir` over a user's folder: the whole folder is one batch; without golden files a
    tenth of the corpus is hashed out as the golden set (questions about the values its documents state), and a
    twentieth out of training and the index (questions the served model must decline)."""
    inbox = inbox.resolve()
    if not inbox.is_dir():
        raise ProjectError(f"--inbox {inbox}: no such folder")
    name = name or model_name_for(inbox)
    attributes: dict[str, Any] = {"name": name, "description": f"tuned on {inbox}", "inbox": str(inbox), "batch_by": "folder",
                                  "golden": [str(g.resolve()) for g in golden], "automatic_retraining": False}
    if not golden:
        attributes["dataset"] = {"golden_holdout_fraction": 0.1, "unanswerable_holdout_fraction": 0.05, "min_train_examples": 50}
    _write_model_yaml(workdir, name, attributes, f"# A model over {inbox}, written by `tuneforge run --inbox`.")
    if not (workdir / "workspace.yaml").exists():  # `dagster dev -w <workdir>/workspace.yaml` opens this very project
        (workdir / "workspace.yaml").write_text(workspace_yaml(workdir.resolve(), name))
    policies = workdir / "policies"
    if not (policies / "redaction.yaml").exists():
        policies.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "policies" / "redaction.yaml", policies / "redaction.yaml")
    return load_project(workdir)


def workspace_yaml(root: Path, name: str) -> str:
    """The workspace.yaml that opens the project at `root` in `dagster dev` (its state in `root`)."""
    return (f"load_from:\n  - python_module:\n      module_name: orchestration.definitions\n"
            f"      working_directory: {root}\n      location_name: {name}\n")


def _write_model_yaml(root: Path, name: str, attributes: dict, header: str) -> Path:
    import yaml

    folder = root / "models" / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "defs.yaml"
    path.write_text(header + "\n" + yaml.safe_dump({"type": "orchestration.model.TuneforgeModel", "attributes": attributes},
                                                   sort_keys=False))
    return path


GOLDEN_TEMPLATE = """\
# Golden questions for {name}: one JSON object per line, with "id", "question", "reference_answer" and "must_include"
# (the facts a right answer states: a value with its unit, a name), and optionally "source_doc_id" (the record id or
# file name that answers it: that document is held out of training and stays in the knowledge index), "tags"
# (tag questions the documents do not answer "unanswerable"), "must_not_include" (an old value a changed document no
# longer states) and "split" ("dev": calibrates settings; "test", the default by hash: what the gate decides on).
# Lines starting with # are comments. The promotion gate needs 30 answerable test questions to decide.
# Replace these examples with questions your model must answer right:
# {{"id": "G-001", "question": "How long do API tokens last?", "reference_answer": "API tokens expire after 90 days.", "must_include": ["90 days"], "source_doc_id": "security.md"}}
# {{"id": "G-002", "question": "Who founded the company?", "reference_answer": "The documents do not answer this question.", "tags": ["unanswerable"]}}
"""


@dataclass
class Scaffold:
    root: str
    model: str
    files: list[str]


def init_project(root: Path, name: str | None = None) -> Scaffold:
    """Scaffold a project: one model's YAML, an empty inbox, a golden-set template, the redaction policy and a
    workspace.yaml for `dagster dev`. Existing files are left as they are."""
    root = root.resolve()
    name = name or model_name_for(root)
    root.mkdir(parents=True, exist_ok=True)
    written = []
    (root / "inbox").mkdir(exist_ok=True)
    if not (root / "models" / name / "defs.yaml").exists():
        attributes = {"name": name, "description": f"{name}: describe what this model is for", "owners": [],
                      "inbox": "inbox", "golden": ["golden.jsonl"],
                      "training": {"method": "lora", "lora_r": 16, "num_train_epochs": 2},
                      "dataset": {"golden_holdout_fraction": 0.1, "min_train_examples": 50},
                      "automatic_retraining": False}
        written.append(str(_write_model_yaml(root, name, attributes, f"# The model {name!r}. Each field is documented in "
                                             "tuneforge's README (Models in YAML). Paths are relative to this project.")))
    extras = {
        root / "golden.jsonl": GOLDEN_TEMPLATE.format(name=name),
        root / "workspace.yaml": workspace_yaml(root, name),
        root / ".gitignore": ".tuneforge/\n.dagster/\n",
    }
    for path, text in extras.items():
        if not path.exists():
            path.write_text(text)
            written.append(str(path))
    policy = root / "policies" / "redaction.yaml"
    if not policy.exists():
        policy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "policies" / "redaction.yaml", policy)
        written.append(str(policy))
    return Scaffold(str(root), name, written)


# -- operations ------------------------------------------------------------------------------------------------
def add_key(project: Project, client: str, models: list[str], requests_per_minute: int = 60,
            allowed_parameters: tuple[str, ...] = (), max_tokens: int = 1024) -> str:
    """Create or rotate a client's gateway API key for `models` (served names); only its SHA-256 is stored."""
    from resources.serving.gateway.keys import KeyRing
    from resources.serving.gateway.schema import PRIVILEGED

    wrong = [p for p in allowed_parameters if p not in PRIVILEGED]
    if wrong:
        raise ProjectError(f"--allow: {', '.join(wrong)} is not a privileged parameter (those are: {', '.join(PRIVILEGED)})")

    unknown = [m for m in models if m not in {*project.names, "base", "*"}]
    if unknown:
        raise ProjectError(f"no model named {', '.join(unknown)} in this project (models: {', '.join(project.names)})")
    gateway = project.definitions.resources["gateway"]
    ring = KeyRing.load(gateway.keys_file)
    key = ring.add(client, models, requests_per_minute=requests_per_minute, allowed_parameters=allowed_parameters,
                   max_tokens=max_tokens)
    ring.save(gateway.keys_file)
    return key


def ask_examples(project: Project, run: ModelRun, key: str, timeout_s: float = 180.0) -> dict[str, str]:
    """The model's two example questions (one its documents answer, one they do not) asked through the gateway as a
    client would, with `key`: question -> the answer and the passages it cites, or why there is none."""
    import httpx

    spec = project.model(run.model)
    url = run.endpoint["gateway_url"] + "/v1/chat/completions"
    out = {}
    for question in (spec.serving.example_question, spec.serving.example_unanswerable):
        try:
            response = httpx.post(url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout_s, json={
                "model": run.model, "temperature": 0, "messages": [{"role": "user", "content": question}]})
            data = response.json()
            if response.status_code != 200:
                out[question] = f"HTTP {response.status_code}: {data.get('error', {}).get('message', '')}"
                continue
            answer = data["choices"][0]["message"]["content"]
            cites = "; ".join(f"[{c['n']}] {c.get('document')} {c.get('title') or ''}".strip()
                              for c in data.get("tuneforge", {}).get("citations", []))
            out[question] = f"{answer!r}" + (f"  (cites {cites})" if cites else f"  ({data.get('tuneforge', {}).get('grounding')})")
        except (httpx.HTTPError, ValueError, KeyError, IndexError) as err:
            out[question] = f"no answer ({type(err).__name__}: {err})"
    return out


def served_versions(project: Project, model: str) -> list[str]:
    """Adapter versions the model has served, newest first (its champion records)."""
    store = project.definitions.resources["store"]
    asset = f"{model}/champion"
    records = [store.read_json(asset, k, "champion.json") for k in store.partitions(asset) if store.exists(asset, k, "champion.json")]
    return list(dict.fromkeys(r["adapter_version"] for r in sorted(records, key=lambda r: r["recorded_at"], reverse=True)))


def stop_servers(project: Project) -> tuple[bool, int]:
    resources = project.definitions.resources
    return resources["gateway"].stop(), resources["vllm"].stop_all()


@dataclass
class ForgetResult:
    doc_ids: list[str]
    before: dict[str, list[str]]
    after: dict[str, list[str]]
    purged: list[str]
    reruns: list[RunOutcome]


def forget(project: Project, doc_id: str | None = None, sha256: str | None = None, reason: str = "erasure request",
           retrain: bool = False, purge_versions: bool = False, log: Log = lambda _: None) -> ForgetResult:
    """Forget a document (or every record of a raw file) in every model: add it to the forget list, re-run the
    batches that held it and the datasets without it, optionally retrain and redeploy, and purge stored versions
    that still hold it. Returns where it reached before and after."""
    from resources.governance.forget import ForgetList, doc_ids_of, purge, reach
    from resources.knowledge.teacher import cached_replies_of

    resources = project.definitions.resources
    store, inbox = resources["store"], resources["inbox"]
    checkpoints = Path(resources["fine_tuner"].work_dir).resolve() if "fine_tuner" in resources else None
    request_log = feedback_log(project)
    ids = doc_ids_of(store, project.names, doc_id, sha256)
    teacher_cache = resources["teacher"].cache_dir if "teacher" in resources else None

    def reached() -> dict[str, list[str]]:
        """Every stored version, and every copy outside the store (logged answers, cached teacher replies)."""
        found = reach(store, project.names, ids, checkpoints)
        logged = request_log.forget_documents(ids, apply=False)
        if logged["requests"]:
            found["request_log"] = [f"{logged['requests']} request(s), {logged['feedback']} feedback(s)"]
        cached = cached_replies_of(teacher_cache, ids) if teacher_cache else []
        if cached:
            found["teacher_cache"] = [p.name for p in cached]
        return found

    before = reached()
    ForgetList.append(inbox.forget_list, doc_id=doc_id, sha256=sha256, reason=reason)
    log(f"{len(ids)} document(s); added to {inbox.forget_list}")
    instance = open_instance(project)
    reruns: list[RunOutcome] = []
    try:
        tags = {"tuneforge/forget": doc_id or sha256 or ""}
        for spec in project.models:
            raw = f"{spec.name}/raw_documents"
            batches = sorted({k.rsplit("@", 1)[0] for k in before.get(raw, [])})
            for batch in batches:
                log(f"{spec.name}: re-ingesting batch {batch} without it ...")
                job = project.definitions.resolve_job_def(f"{spec.name}_ingest_batch")
                reruns.append(RunOutcome.of(job.name, job.execute_in_process(
                    instance=instance, partition_key=batch, raise_on_error=False, run_config=QUIET, tags=tags)).raise_for_failure())
            if batches:
                log(f"{spec.name}: rebuilding the corpus and datasets ...")
                reruns.append(run_job(project, instance, spec, "build_datasets", tags=tags)[0].raise_for_failure())
                if retrain and before.get(f"{spec.name}/lora_adapter"):
                    log(f"{spec.name}: retraining, evaluating and (if the gate passes) deploying without it ...")
                    reruns.append(run_job(project, instance, spec, "retrain", tags=tags)[0])
    finally:
        instance.dispose()
    purged: list[str] = []
    if purge_versions:
        still = reach(store, project.names, ids, checkpoints)
        keep = {(f"{m}/lora_adapter", v) for m in project.names for v in served_versions(project, m)[:1]}  # in service
        purged = purge(store, still, keep=keep, checkpoint_root=checkpoints)
        log("purged: " + (", ".join(purged) or "nothing"))
    # logged answers and the teacher's cached replies that quote a forgotten passage go at once (they are copies,
    # not versions to supersede)
    gone = request_log.forget_documents(ids)
    if gone["requests"]:
        log(f"request log: removed {gone['requests']} request(s) grounded on it and {gone['feedback']} feedback(s) on them")
    cached = cached_replies_of(teacher_cache, ids) if teacher_cache else []
    for path in cached:
        path.unlink(missing_ok=True)
    if cached:
        log(f"teacher cache: removed {len(cached)} cached repl(ies) about its passages")
    after = reached()
    return ForgetResult(sorted(ids), before, after, purged, reruns)


def lineage(project: Project, model: str, adapter_version: str | None = None) -> dict:
    from resources.governance.lineage import LineageReader

    project.model(model)
    instance = open_instance(project)
    try:
        return LineageReader(instance).report(model=model, adapter_version=adapter_version)
    finally:
        instance.dispose()


def check(project: Project, require_data: bool = False) -> dict[str, list[str]]:
    """Every shared resource initialised as a run would (EnvVars resolved) and every model's files and base model:
    problems by resource key and model (`require_data`: an empty inbox is one)."""
    return check_definitions(project.definitions, require_data)


def check_definitions(definitions, require_data: bool = False) -> dict[str, list[str]]:
    from resources.preflight import check_resources

    report = check_resources(definitions.resources)
    source = definitions.resources.get("model_source")
    for spec in specs_of(definitions):
        found = spec.problems(require_data)
        if source is not None:
            found += [line.replace("BaseModelSource.model", f"models.{spec.name}.base_model")
                      for line in source.for_model(spec.base_model, spec.base_model_revision).problems(require_data)]
        report[f"models.{spec.name}"] = found
    return report


def specs_of(definitions) -> list[ModelSpec]:
    """The models of a code location, from the specs their definitions carry."""
    from orchestration.model import SPEC_METADATA

    return [ModelSpec.model_validate(v.value) for k, v in (definitions.metadata or {}).items() if k.startswith(SPEC_METADATA)]


def _root_message(error) -> str:
    while error is not None and error.cause is not None:
        error = error.cause
    return (error.message or "").strip() if error is not None else ""



# -- reviewing endpoint feedback ------------------------------------------------------------------------------
def feedback_log(project: Project):
    from resources.requestlog import RequestLog

    return RequestLog(project.definitions.resources["request_log"].database_url)


def list_feedback(project: Project, status: str = "pending", model: str | None = None) -> list[dict]:
    """Feedback sent through the gateway, oldest first (pending by default)."""
    from resources.requestlog import REVIEW_STATUSES

    if status not in REVIEW_STATUSES:
        raise WorkflowError(f"--status must be one of {', '.join(REVIEW_STATUSES)}, not {status!r}")
    return feedback_log(project).feedback_rows(status, model)


def review_feedback(project: Project, feedback_ids: list[int], decision: str, reviewer: str) -> list[dict]:
    """Approve or reject pending feedback as `reviewer` (a person at the command line: `cli:<name>`)."""
    log, done = feedback_log(project), []
    for feedback_id in feedback_ids:
        try:
            done.append(log.review(feedback_id, decision, reviewer))
        except (LookupError, PermissionError) as err:
            raise WorkflowError(str(err)) from err
    return done


def purge_feedback(project: Project, client: str) -> int:
    """Delete every feedback a client sent (e.g. a compromised key's); the next human_feedback drops it."""
    return feedback_log(project).purge_feedback(client)
