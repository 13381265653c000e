"""`tuneforge init` and `tuneforge run` as a user runs them: a scaffolded project loads; a folder of real documents
no one on the project wrote (the long descriptions of installed Python packages) goes through the data stages
with a project-local instance and store under the work dir, and `summary.json` says what happened; a stage that
fails makes the command exit non-zero, naming the step."""

import email
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest

from helpers import ROOT
from resources.knowledge.claims import states

TUNEFORGE = [sys.executable, "-m", "orchestration.cli"]


def tuneforge(*args, cwd=None, timeout=1200):
    return subprocess.run([*TUNEFORGE, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd or ROOT,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})


def package_readmes(folder: Path, count: int) -> list[str]:
    """The long descriptions of installed packages, one file each (real, varied documentation): half Markdown,
    half reStructuredText, as each package declares it."""
    folder.mkdir(parents=True, exist_ok=True)
    written, per_format = [], {"md": 0, "rst": 0}
    for dist in sorted(metadata.distributions(), key=lambda d: d.metadata["Name"].lower()):
        meta = email.message_from_string(dist.read_text("METADATA") or "")
        body = meta.get_payload() or ""
        kind = (meta.get("Description-Content-Type") or "").lower()
        fmt = "md" if "markdown" in kind else "rst" if "rst" in kind else None
        if fmt is None or len(body) < 400 or per_format[fmt] >= count // 2:
            continue
        name = f"{dist.metadata['Name'].lower()}.{fmt}"
        if name in written:
            continue
        (folder / name).write_text(body)
        written.append(name)
        per_format[fmt] += 1
        if len(written) == count:
            break
    return written


def test_init_scaffolds_a_project_that_loads(tmp_path):
    from orchestration.project import load_project
    from resources.datasets.builder import read_golden_file

    out = tuneforge("init", str(tmp_path / "acme-docs"))
    assert out.returncode == 0, out.stderr
    root = tmp_path / "acme-docs"
    assert (root / "inbox").is_dir() and not any((root / "inbox").iterdir())
    assert (root / "models" / "acme_docs" / "defs.yaml").is_file() and (root / "workspace.yaml").is_file()
    project = load_project(root)
    [spec] = project.models
    assert spec.name == "acme_docs" and spec.inbox == str(root / "inbox") and spec.golden == [str(root / "golden.jsonl")]
    # opening the UI on a new project starts no training run: its retraining sensor waits to be turned on
    from dagster import DefaultSensorStatus

    sensors = {s.name: s.default_status for s in project.definitions.sensors}
    assert sensors["acme_docs_retraining_sensor"] == DefaultSensorStatus.STOPPED and not spec.automatic_retraining
    examples, quarantine = read_golden_file(root / "golden.jsonl", "golden.jsonl")  # the template: comments only
    assert examples == [] and quarantine == []
    assert "# {\"id\": \"G-001\"" in (root / "golden.jsonl").read_text()
    again = tuneforge("init", str(root))
    assert again.returncode == 0 and "every file was there already" in again.stdout


@pytest.mark.slow
def test_run_on_a_folder_of_real_documents_writes_a_summary(tmp_path):
    docs = tmp_path / "package-docs"
    names = package_readmes(docs, 16)
    assert len(names) >= 14 and any(n.endswith(".rst") for n in names)
    (docs / "copy-of-first.md").write_bytes((docs / names[0]).read_bytes())  # a byte-identical copy
    work = tmp_path / "work"
    out = tuneforge("run", "--inbox", str(docs), "--workdir", str(work), "--until", "data")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = json.loads((work / "summary.json").read_text())
    [(model, entry)] = summary["models"].items()
    assert model == "package_docs" and summary["until"] == "data" and not summary["failed"]
    written = (work / "models" / model / "defs.yaml").read_text()  # `dagster dev` on this workdir trains nothing by itself
    assert "automatic_retraining: false" in written
    [(batch, info)] = entry["batches"].items()  # the whole folder is one batch
    assert batch == "package-docs" and info["success"]
    raw = info["ledgers"]["raw_documents"]
    assert raw["records_in"] == len(names) + 1 and raw["balanced"]
    assert raw["dropped"] == {"exact_duplicate": 1} and raw["quarantined"] == {}  # nothing refused for its length
    dataset = entry["datasets"]["instruction_dataset"]
    assert dataset["train"] > 0 and dataset["ledger"]["balanced"]
    artifacts = work / ".tuneforge" / "artifacts" / model
    [chunks] = [pd.read_parquet(f) for f in (artifacts / "document_chunks").glob("*/chunks.parquet")]
    [corpus] = [pd.read_parquet(f) for f in (artifacts / "corpus").glob("*/documents.parquet")]
    assert set(corpus["doc_id"]) == set(chunks["doc_id"])  # every document gave passages
    assert chunks["tokens"].max() <= 256 and (chunks["section"] != "").mean() > 0.8
    [examples] = [pd.read_parquet(f) for f in (artifacts / "instruction_dataset").glob("*/examples.parquet")]
    made = examples[examples["origin"].str.startswith("knowledge:")]  # cloze and raft, in the served prompt
    assert made["source_doc_id"].nunique() >= 0.7 * len(corpus)  # most documents' sections became examples
    assert made["messages"].map(lambda m: m[0]["role"] == "system" and "[1]" in m[0]["content"]).all()
    assert entry["datasets"]["golden_examples"] > 0  # no golden file: a tenth of the corpus held out
    [golden] = [pd.read_parquet(f) for f in (artifacts / "golden_dataset").glob("*/examples.parquet")]
    assert golden["origin"].str.startswith("holdout").all() and len(list((artifacts / "golden_segments").iterdir())) == 1
    # facts: a cloze question for each value a held-out document states, that value as the fact; a held-out document
    # stating no value is asked about by its headings, without facts (this folder's hash may hold out only such ones)
    cloze, headings = (golden[golden["origin"] == o] for o in ("holdout:cloze", "holdout:headings"))
    assert len(cloze) + len(headings) + (golden["origin"] == "holdout:unindexed").sum() == len(golden)
    assert all(len(f) == 1 and states(f[0], a) for f, a in zip(cloze["must_include"], cloze["answer"]))
    assert headings["must_include"].map(len).eq(0).all()
    assert not set(cloze["source_doc_id"]) & set(headings["source_doc_id"])
    assert not set(golden["prompt"]) & set(examples["prompt"])  # a held-out question never trains
    assert (work / ".dagster" / "dagster.yaml").is_file() and (work / ".tuneforge" / "artifacts" / model).is_dir()
    assert "instruction_dataset" in out.stdout and str(work / "summary.json") in out.stdout
    # one row per file, in summary.json and printed: what each file gave, what it lost and why
    files = {f["file"]: f for f in entry["files"]}
    assert set(files) == {*names, "copy-of-first.md"} and sum(f["records"] for f in files.values()) == raw["records_in"]
    [copy] = [f for f in files.values() if f["lost"]]
    assert copy["lost"] == {f"reading: exact_duplicate of {names[0] if copy['file'] == 'copy-of-first.md' else 'copy-of-first.md'}": 1}
    assert sum(f["kept"] for f in files.values()) == len(corpus) and sum(f["passages"] for f in files.values()) == len(chunks)
    row = next(line for line in out.stdout.splitlines() if line.strip().startswith(copy["file"]))
    assert row.split()[1:5] == ["1", "0", "0", "0"] and "exact_duplicate of" in row
    # the exact command that opens this workdir's own instance in the UI (not the clone's `make dev`)
    assert f"`DAGSTER_HOME={work.resolve() / '.dagster'} dagster dev -w {work.resolve() / 'workspace.yaml'}`" in out.stdout
    assert f"working_directory: {work.resolve()}" in (work / "workspace.yaml").read_text()


@pytest.mark.slow
def test_a_failing_stage_makes_run_exit_non_zero_and_names_the_step(tmp_path):
    docs = tmp_path / "unreadable"
    docs.mkdir()
    (docs / "scan.pdf").write_bytes(b"%PDF-1.4\x00\x00 binary")  # nothing readable: every record quarantined
    work = tmp_path / "work"
    out = tuneforge("run", "--inbox", str(docs), "--project", str(work), "--until", "data")  # --project: where it goes
    assert out.returncode == 1, out.stdout[-2000:]
    summary = json.loads((work / "summary.json").read_text())
    entry = summary["models"]["unreadable"]
    assert summary["failed"] and entry["error"]
    assert entry["batches"]["unreadable"]["ledgers"]["raw_documents"]["quarantined"] == {"malformed_pdf": 1}
    assert entry["failed_steps"] and all(s["message"] for s in entry["failed_steps"])
    assert "FAILED" in out.stdout


def test_feedback_is_reviewed_at_the_command_line_before_it_reaches_a_dataset(tmp_path):
    """`tuneforge feedback list|approve|reject|purge` over the project's request log (a real SQLite database):
    pending feedback is invisible to human_feedback until approved; the sender cannot approve its own; a
    client's feedback can be purged by its origin."""
    import yaml

    from orchestration.project import load_project
    from resources.requestlog import RequestLog, RequestLogSource

    project_dir = tmp_path / "proj"
    assert tuneforge("init", str(project_dir), "--name", "helpdesk").returncode == 0
    project = load_project(project_dir)
    url = project.definitions.resources["request_log"].database_url
    log = RequestLog(url)
    for i, client in enumerate(["acme", "acme", "mallory"]):
        log.record({"id": f"r{i}", "client": client, "endpoint": "chat", "model": "helpdesk", "status": 200,
                    "prompt_redacted": f"question {i}"})
        log.record_feedback({"response_id": f"r{i}", "client": client, "rating": "down", "corrected_answer": f"fix {i}"})
    listed = tuneforge("feedback", "list", "--project", str(project_dir))
    assert listed.returncode == 0 and "3 pending" in listed.stdout and "fix 0" in listed.stdout
    assert RequestLogSource(database_url=url).feedback("helpdesk") == []
    ids = [r["id"] for r in log.feedback_rows("pending")]
    done = tuneforge("feedback", "approve", str(ids[1]), "--reviewer", "dana", "--project", str(project_dir))
    assert done.returncode == 0 and "approved by cli:dana" in done.stdout
    rejected = tuneforge("feedback", "reject", str(ids[2]), "--project", str(project_dir))
    assert rejected.returncode == 0
    approved = RequestLogSource(database_url=url).feedback("helpdesk")
    assert "endpoint-%d" % ids[1] in [r["feedback_id"] for r in approved]
    assert all(r["corrected_answer"] != "fix 2" for r in approved)  # rejected: never in a dataset
    purged = tuneforge("feedback", "purge", "--client", "mallory", "--project", str(project_dir))
    assert purged.returncode == 0 and "deleted 1" in purged.stdout
    assert {r["client"] for r in log.feedback_rows()} == {"acme"} and len(log.feedback_rows("pending")) == 1
    assert yaml.safe_load((project_dir / "models" / "helpdesk" / "defs.yaml").read_text())  # the project untouched


def test_keys_with_privileged_parameters_and_a_token_cap(tmp_path):
    """`tuneforge keys --allow n,logprobs --max-tokens 256`: the scope is stored with the hashed key; a parameter
    that is not privileged is refused naming the ones that are."""
    from orchestration.project import load_project
    from resources.serving.gateway.keys import KeyRing

    project_dir = tmp_path / "proj"
    assert tuneforge("init", str(project_dir), "--name", "helpdesk").returncode == 0
    made = tuneforge("keys", "analyst", "--models", "helpdesk", "--allow", "n,logprobs", "--max-tokens", "256",
                     "--project", str(project_dir))
    assert made.returncode == 0, made.stdout + made.stderr
    key = made.stdout.strip().split()[-1]
    keys_file = load_project(project_dir).definitions.resources["gateway"].keys_file
    client = KeyRing.load(keys_file).authenticate(key)
    assert client.allowed_parameters == ("n", "logprobs") and client.max_tokens == 256 and key not in open(keys_file).read()
    wrong = tuneforge("keys", "x", "--models", "helpdesk", "--allow", "tools", "--project", str(project_dir))
    assert wrong.returncode == 2 and "not a privileged parameter" in wrong.stdout + wrong.stderr


def test_the_report_says_why_a_small_corpus_has_no_validation_loss(tmp_path):
    """Ten documents at validation_fraction 0.1 can leave the validation split empty: the adapter then has no
    validation loss, and the printed report says so instead of failing at its very end."""
    from orchestration.project import load_project
    from orchestration.report import render
    from orchestration.workflows import ModelRun, ProjectRun, RunOutcome

    tuneforge("init", str(tmp_path / "small"))
    project = load_project(tmp_path / "small", tmp_path / "work")
    [spec] = project.models
    store = project.definitions.resources["store"]
    with store.writing(f"{spec.name}/lora_adapter", "v1") as out:
        (out / "tuneforge_manifest.json").write_text(json.dumps({"stats": {
            "base_eval_loss": None, "final_eval_loss": None, "eval_examples": 0, "steps": 12, "tokens_per_s": 300.0,
            "packing_efficiency": 0.97}}))
    training = RunOutcome("train_adapter", "r1", True, artifacts={f"{spec.name}/lora_adapter": "v1"})
    text = render(project, ProjectRun(str(project.root), str(project.workdir), "training",
                                      [ModelRun(spec.name, training=training)]))
    assert ("lora_adapter: validation loss not measured: 0 validation examples (the dataset's validation split, "
            f"dataset.validation_fraction {spec.dataset.validation_fraction} of the documents, is empty for a corpus "
            "this small); 12 steps, 300.0 tokens/s, packing efficiency 97.0%") in text
