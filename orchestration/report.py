"""What `tuneforge run` and `tuneforge demo` print: per model, the ledgers, the dataset, training, the golden-set
table, the promotion decision and the endpoint with a curl that works when pasted."""

from __future__ import annotations

import json
from pathlib import Path

from orchestration.project import Project
from orchestration.workflows import REPO, ModelRun, ProjectRun, file_rows
from resources.serving.deploy import endpoint_curl


def render(project: Project, result: ProjectRun, keys: dict[str, str] | None = None,
           asked: dict[str, dict[str, str]] | None = None) -> str:
    """`keys`: model -> an API key for it, printed with its curl; `asked`: model -> question -> what the gateway
    answered it (the answer and the passages it cites), printed under each curl."""
    store = project.definitions.resources["store"]
    summary = json.loads(Path(result.summary_path).read_text())["models"] if result.summary_path else None
    lines = []
    for run in result.models:
        spec = project.model(run.model)
        lines += ["", f"model {run.model}: {spec.description}".rstrip(": "), "=" * 60]
        for batch, outcome in run.batches.items():
            key = outcome.artifacts.get(f"{run.model}/raw_documents[{batch}]")
            if key is None:
                lines.append(f"  {batch:34s} FAILED: {outcome.message().splitlines()[-1].strip()}")
                continue
            ledger = store.read_json(f"{run.model}/raw_documents", key, "ledger.json")
            extra = {**ledger["dropped"], **ledger["quarantined"]}
            lines.append(f"  {batch:34s} in {ledger['records_in']:4d}  kept {ledger['kept']:4d}  {json.dumps(extra) if extra else ''}")
        files = summary.get(run.model, {}).get("files") if summary else None  # summary.json has them already
        lines += file_lines(file_rows(store, run) if files is None else files, len(run.batches))
        if run.datasets is not None and run.datasets.success:
            lines += _datasets(store, run)
        if run.training is not None and f"{run.model}/lora_adapter" in run.training.artifacts:
            stats = store.read_json(f"{run.model}/lora_adapter", run.training.artifacts[f"{run.model}/lora_adapter"],
                                    "tuneforge_manifest.json")["stats"]
            lines.append(f"  lora_adapter: {_losses(stats, spec)}; {stats.get('steps')} steps, {stats.get('tokens_per_s')} "
                         f"tokens/s, packing efficiency {_share(stats.get('packing_efficiency'))}")
        if run.scores:
            lines += golden_table(run.scores)
        if run.decision is not None:
            lines.append(f"  promotion gate: {run.decision.verdict.upper()}")
            lines += [f"    - {r}" for r in run.decision.reasons]
        if run.endpoint is not None:
            lines.append(f"  endpoint: {run.endpoint['gateway_url']}/v1  model {run.model!r} = adapter "
                         f"{run.endpoint['adapter_version']} (vLLM model {run.endpoint['served_model']}; previous: "
                         f"{run.endpoint['previous_version'] or 'none'})")
            if keys and run.model in keys:
                lines.append(f"    export TUNEFORGE_API_KEY={keys[run.model]}   # client {run.model}-demo, model {run.model} "
                             "only (shown once; only its SHA-256 is stored)")
            for question in (spec.serving.example_question, spec.serving.example_unanswerable):
                lines.append("    " + endpoint_curl(run.endpoint["gateway_url"], run.model, question))
                answer = (asked or {}).get(run.model, {}).get(question)
                if answer is not None:
                    lines.append(f"      -> {answer}")
        elif run.decision is not None and not run.decision.promote and result.until == "deployment":
            lines.append("  not deployed: the promotion gate blocked the adapter (the reasons are above)")
        if run.error:
            lines.append(f"  FAILED: {run.error}")
    if keys and len(keys) > 1:
        lines.append("Each key reaches its own model only: the other model answers it with 404.")
    if any(run.endpoint for run in result.models):
        lines.append("vLLM and the gateway keep running: stop them with `tuneforge serve stop`.")
    lines += ["", f"summary: {result.summary_path}", f"Open the Dagster UI with {ui_command(project)} to browse assets, "
              "checks, plots and lineage."]
    return "\n".join(lines)


FILE_ROWS = 60  # printed per model; summary.json has every file


def file_lines(rows: list[dict], batches: int) -> list[str]:
    """One line per raw file, when the model's batches hold more files than there are batches (an `--inbox`
    folder is one batch): records, documents kept in the corpus, passages, examples, and what was lost where ("—":
    records of a batch ingested by an earlier run)."""
    if len(rows) <= batches:
        return []
    width = min(48, max(len(r["file"]) for r in rows))
    out = [f"    {'file':{width}s} records  kept  passages  examples  lost"]
    for r in rows[:FILE_ROWS]:
        lost = ", ".join(f"{reason} x{n}" for reason, n in sorted(r["lost"].items()))
        name = r["file"] if len(r["file"]) <= width else "…" + r["file"][-(width - 1):]
        records = "—" if r["records"] is None else str(r["records"])
        out.append(f"    {name:{width}s} {records:>7s} {r['kept']:5d} {r['passages']:9d} {r['examples']:9d}  {lost}".rstrip())
    if len(rows) > FILE_ROWS:
        out.append(f"    … {len(rows) - FILE_ROWS} more files in summary.json")
    return out


def _datasets(store, run: ModelRun) -> list[str]:
    artifacts = run.datasets.artifacts
    out = []
    dataset = artifacts.get(f"{run.model}/instruction_dataset")
    if dataset:
        examples = store.read_table(f"{run.model}/instruction_dataset", dataset, "examples.parquet")
        splits = examples["split"].value_counts().to_dict()
        golden = artifacts.get(f"{run.model}/golden_dataset")
        golden_n = len(store.read_table(f"{run.model}/golden_dataset", golden, "examples.parquet")) if golden else 0
        out.append(f"  instruction_dataset {dataset}: train {splits.get('train', 0)}, validation {splits.get('validation', 0)}; "
                   f"golden {golden_n}")
    corpus = artifacts.get(f"{run.model}/corpus")
    if corpus:
        ledger = store.read_json(f"{run.model}/corpus", corpus, "ledger.json")
        out.append(f"  corpus {corpus}: {ledger['records_in']} documents in, {ledger['kept']} kept"
                   + (f", dropped {json.dumps(ledger['dropped'])}" if ledger["dropped"] else ""))
    return out


# the golden-set table's columns, in this order (the evaluation's scores.json and the UI have every metric)
COLUMNS = ("fact_recall", "fact_correct", "abstention_recall", "false_abstention", "hallucination", "citation_precision",
           "stale_fact", "rouge_l", "verbosity", "runaway_rate")


def golden_table(scores: dict[str, dict[str, float]]) -> list[str]:
    columns = [c for c in COLUMNS if any(c in s for s in scores.values())]
    lines = ["", "  golden set (sealed test split) | " + " | ".join(columns), "  ---"]
    width = max([10, *(len(role) for role in scores)])
    lines += [f"  {role:{width}s} | " + " | ".join(f"{s[c]:.3f}" if c in s else "—" for c in columns)
              for role, s in scores.items()]
    return lines


def problems(report: dict[str, list[str]]) -> list[str]:
    lines = []
    for key, found in report.items():
        lines.append(f"{'ok  ' if not found else 'FAIL'} {key}")
        lines += [f"     {line}" for line in found]
    failed = sum(1 for found in report.values() if found)
    lines.append(f"{len(report) - failed} ok, {failed} with problems")
    return lines


def _share(value) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _losses(stats: dict, spec) -> str:
    """The validation losses, or why there are none (a small corpus can leave the validation split empty)."""
    base, final = stats.get("base_eval_loss"), stats.get("final_eval_loss")
    if base is None or final is None:
        return (f"validation loss not measured: {stats.get('eval_examples', 0)} validation examples (the dataset's "
                f"validation split, dataset.validation_fraction {spec.dataset.validation_fraction} of the documents, "
                "is empty for a corpus this small)")
    return f"validation loss {base:.4f} (base model) -> {final:.4f} (adapter)"


def ui_command(project: Project) -> str:
    """The exact command that opens this project's own instance in the Dagster UI."""
    if project.root == REPO.resolve() and project.workdir == project.root:
        return "`make dev`"
    return f"`DAGSTER_HOME={project.dagster_home} dagster dev -w {project.root / 'workspace.yaml'}`"
