"""`tuneforge` command line: the demo, and the operations a user runs outside the UI."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import warnings
from pathlib import Path

from resources.offline import apply_offline_defaults


# Console logging of in-process runs at INFO (the UI keeps every event regardless).
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _instance(dagster_home: str):
    """The persistent Dagster instance the UI (`make dev`) also reads."""
    home = Path(dagster_home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        shutil.copy(Path(__file__).resolve().parent.parent / "config" / "dagster" / "dagster.yaml", config)
    os.environ["DAGSTER_HOME"] = str(home)
    from dagster import DagsterInstance

    return DagsterInstance.get()


def seed_inbox(sample: Path, inbox: Path) -> list[str]:
    """Copy the sample batches into the inbox (skipping any already there)."""
    inbox.mkdir(parents=True, exist_ok=True)
    copied = []
    for entry in sorted(sample.iterdir()):
        target = inbox / entry.name
        if target.exists():
            continue
        (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, target)
        copied.append(entry.name)
    return copied


def run_pipeline(instance, defs, log=print) -> dict:
    """Tick the inbox sensor once and run what it requests, then rebuild the datasets: exactly what
    the daemon does, executed in this process."""
    from dagster import build_sensor_context

    from orchestration.sensors import inbox_sensor

    resources = defs.resources
    cursor_file = Path(instance.root_directory) / "inbox_sensor.cursor"
    cursor = cursor_file.read_text() if cursor_file.exists() else None
    inbox = resources["inbox"].model_copy(update={"settle_seconds": 0})
    with build_sensor_context(instance=instance, cursor=cursor, resources={"inbox": inbox}) as context:
        result = inbox_sensor(context)
    summary: dict = {"batches": {}}
    if hasattr(result, "run_requests"):
        for request in result.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        if result.cursor:
            cursor_file.write_text(result.cursor)
        job = defs.resolve_job_def("ingest_batch")
        for request in result.run_requests:
            log(f"ingesting batch {request.partition_key} ...")
            # the tags the sensor daemon gives its runs, so `make dev`'s daemon recognises them as done
            tags = {**request.tags, "dagster/sensor_name": inbox_sensor.name, "dagster/run_key": request.run_key}
            run = job.execute_in_process(
                instance=instance, partition_key=request.partition_key, tags=tags, raise_on_error=False,
                run_config=QUIET,
            )
            summary["batches"][request.partition_key] = _outcome(run, f"ingestion of {request.partition_key}")
    log("building datasets ...")
    run = defs.resolve_job_def("build_datasets").execute_in_process(instance=instance, raise_on_error=False, run_config=QUIET)
    summary["datasets"] = _outcome(run, "build_datasets")
    return summary


def evaluate(instance, defs) -> str:
    """Run evaluate_adapter; a blocked promotion is a decision to report, not a failure of the demo."""
    run = defs.resolve_job_def("evaluate_adapter").execute_in_process(
        instance=instance, raise_on_error=False, run_config=QUIET
    )
    gate = [e for e in run.get_asset_check_evaluations() if e.check_name == "promotion_gate"]
    if not gate:
        _outcome(run, "evaluate_adapter")
    store = defs.resources["store"]
    scores = store.read_json("eval_report", store.latest("eval_report"), "scores.json")["scores"]
    columns = sorted({k for s in scores.values() for k in s})
    lines = ["", "golden set | " + " | ".join(columns), "---"]
    lines += [f"{role:10s} | " + " | ".join(f"{s[c]:.3f}" if c in s else "—" for c in columns) for role, s in scores.items()]
    lines += [f"promotion gate: {gate[0].metadata['decision'].value.upper()}", gate[0].metadata["reasons"].value]
    return "\n".join(lines)


def _outcome(run, what: str) -> str:
    """Fail loudly with the failing checks' own words, or return the run id."""
    if run.success:
        return run.run_id
    failed = [
        f"  check {e.asset_check_key.asset_key.to_user_string()}:{e.check_name}: "
        + "; ".join(f"{k}={v.value}" for k, v in e.metadata.items() if k in ("failures", "problems", "residual_by_entity"))
        for e in run.get_asset_check_evaluations()
        if not e.passed
    ]
    errors = [f"  step {ev.step_key}: {ev.event_specific_data.error.message.strip()}" for ev in run.all_events if ev.is_step_failure]
    raise SystemExit("\n".join([f"{what} failed (run {run.run_id}):", *failed, *errors]))


def demo(args: argparse.Namespace) -> int:
    apply_offline_defaults()
    # Partitioned asset checks are a Dagster "preview" feature, used deliberately (see README).
    warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec")
    from orchestration.definitions import defs
    from resources.preflight import check_resources

    instance = _instance(args.dagster_home)
    inbox = Path(defs.resources["inbox"].path)
    copied = seed_inbox(Path(args.sample), inbox)
    print(f"inbox {inbox.resolve()}: added {len(copied)} sample batches {copied}")
    reviews = seed_inbox(Path(args.sample).parent / "feedback", Path(defs.resources["feedback"].path))
    print(f"feedback {Path(defs.resources['feedback'].path).resolve()}: added {reviews}")
    needed = {k: v for k, v in defs.resources.items() if not (args.skip_serving and k in ("vllm", "gateway"))}
    problems = [line for lines in check_resources(needed).values() for line in lines]
    if problems:  # before anything runs: every configuration problem at once, each naming its field
        print("configuration problems (tuneforge check):\n  " + "\n  ".join(problems))
        return 1
    run_pipeline(instance, defs)
    if not args.skip_training:
        print("fine-tuning (base_model -> lora_adapter -> merged_model); progress is logged every few steps ...")
        train(instance, defs, args.max_steps)
        print("evaluating base model vs adapter on the golden set, probing safety, deciding promotion ...")
        verdict = evaluate(instance, defs)
        print(verdict)
        if not args.skip_serving and "promotion gate: PROMOTE" in verdict:
            print("deploying: vLLM (multi-LoRA) behind the guardrail gateway; vLLM start-up takes about a minute ...")
            print(deploy_and_show(instance, defs))
        elif not args.skip_serving:
            print("not deployed: the promotion gate blocked the adapter (see the reasons above)")
    print(describe(defs))
    return 0


def deploy_and_show(instance, defs, adapter_version: str | None = None) -> str:
    """Run deploy_adapter, give the demo client a key, and show a curl that talks to the tuned model."""
    config = {"adapter_version": adapter_version} if adapter_version else {}
    run = defs.resolve_job_def("deploy_adapter").execute_in_process(
        instance=instance, raise_on_error=False,
        run_config={"ops": {"deployed_endpoint": {"config": config}}, "loggers": {"console": {"config": {"log_level": "INFO"}}}})
    _outcome(run, "deploy_adapter")
    store, gateway = defs.resources["store"], defs.resources["gateway"]
    endpoint = store.read_json("deployed_endpoint", store.latest("deployed_endpoint"), "endpoint.json")
    key = add_key(gateway, "demo", [endpoint["name"], "base"])
    return "\n".join([
        f"endpoint: {endpoint['gateway_url']}/v1  model {endpoint['name']!r} = adapter {endpoint['adapter_version']} "
        f"(vLLM model {endpoint['served_model']}; previous: {endpoint['previous_version'] or 'none'})",
        f"API key for client 'demo' (shown once, stored hashed in {gateway.keys_file}):",
        f"  export TUNEFORGE_API_KEY={key}",
        f"  curl -s {endpoint['gateway_url']}/v1/chat/completions -H \"Authorization: Bearer $TUNEFORGE_API_KEY\" "
        f"-H 'Content-Type: application/json' -d '{{\"model\": \"{endpoint['name']}\", \"temperature\": 0, \"messages\": "
        f"[{{\"role\": \"user\", \"content\": \"How long do API tokens last?\"}}]}}'",
        "stop the servers with `tuneforge serve stop`",
    ])


def add_key(gateway, client: str, models: list[str], requests_per_minute: int = 60) -> str:
    from resources.serving.gateway.keys import KeyRing

    ring = KeyRing.load(gateway.keys_file)
    key = ring.add(client, models, requests_per_minute=requests_per_minute)
    ring.save(gateway.keys_file)
    return key


def keys_command(args: argparse.Namespace) -> int:
    from orchestration.definitions import defs

    key = add_key(defs.resources["gateway"], args.client, args.models.split(","), args.requests_per_minute)
    print(f"API key for {args.client!r} (shown once; only its SHA-256 is stored): {key}")
    return 0


def gateway_command(args: argparse.Namespace) -> int:
    apply_offline_defaults()
    from resources.serving.gateway.app import run

    run(args.settings, args.host, args.port)
    return 0


def rollback_command(args: argparse.Namespace) -> int:
    """Put a previous adapter version back in service (it must have passed the gate when it was evaluated)."""
    apply_offline_defaults()
    from orchestration.definitions import defs

    instance = _instance(args.dagster_home)
    store = defs.resources["store"]
    target = args.to
    if target is None:
        current = store.read_json("deployed_endpoint", store.latest("deployed_endpoint"), "endpoint.json")
        target = current["previous_version"]
        if not target:
            raise SystemExit("nothing to roll back to: the current deployment has no previous version (use --to VERSION)")
    print(deploy_and_show(instance, defs, target))
    return 0


def forget(instance, defs, doc_id: str | None = None, sha256: str | None = None, reason: str = "erasure request",
           retrain: bool = False, purge_versions: bool = False, log=print) -> dict:
    """Forget a document (or every record of a raw file): list where it reached, add it to the forget
    list, re-run the affected ingestion partitions and the datasets without it, optionally retrain and
    redeploy, and purge stored versions that still hold it. Returns what it reached before and after."""
    from resources.governance.forget import ForgetList, doc_ids_of, purge, reach

    store, inbox = defs.resources["store"], defs.resources["inbox"]
    ids = doc_ids_of(store, doc_id, sha256)
    before = reach(store, doc_ids=ids)
    log(f"{len(ids)} document(s) reached: " + (json.dumps(before, indent=2) if before else "nothing stored holds them"))
    forget_list = ForgetList.load(inbox.forget_list)
    forget_list.add(doc_id=doc_id, sha256=sha256, reason=reason)
    forget_list.save(inbox.forget_list)
    log(f"added to {inbox.forget_list}")
    tags = {"tuneforge/forget": doc_id or sha256}
    job = defs.resolve_job_def("ingest_batch")
    for batch in before.get("raw_documents", []):
        log(f"re-ingesting batch {batch} without it ...")
        _outcome(job.execute_in_process(instance=instance, partition_key=batch, raise_on_error=False, run_config=QUIET,
                                        tags=tags), f"ingestion of {batch}")
    log("rebuilding datasets ...")
    _outcome(defs.resolve_job_def("build_datasets").execute_in_process(
        instance=instance, raise_on_error=False, run_config=QUIET, tags=tags), "build_datasets")
    if retrain and before.get("lora_adapter"):
        log("retraining, evaluating and (if the gate passes) deploying without it ...")
        train(instance, defs)
        verdict = evaluate(instance, defs)
        log(verdict)
        if "promotion gate: PROMOTE" in verdict and before.get("deployed_endpoint"):
            log(deploy_and_show(instance, defs))
    purged: list[str] = []
    if purge_versions:
        still = reach(store, doc_ids=ids)
        champion = store.latest("champion") if (store.asset_dir("champion") / "LATEST").is_file() else None
        purged = purge(store, still, keep={("lora_adapter", champion)} if champion else set())
        log("purged: " + (", ".join(purged) or "nothing"))
        if champion in still.get("lora_adapter", []):
            log(f"warning: the deployed adapter {champion} was trained on it: run with --retrain to replace it")
    after = reach(store, doc_ids=ids)
    log("still reached: " + (json.dumps(after, indent=2) if after else "nothing"))
    return {"doc_ids": sorted(ids), "before": before, "after": after, "purged": purged}


def forget_command(args: argparse.Namespace) -> int:
    import hashlib

    apply_offline_defaults()
    warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec")
    from orchestration.definitions import defs
    from resources.governance.forget import doc_ids_of, reach

    instance = _instance(args.dagster_home)
    sha = None
    if args.file:
        sha = hashlib.sha256(Path(args.file).read_bytes()).hexdigest() if Path(args.file).is_file() else args.file
    if args.dry_run:
        found = reach(defs.resources["store"], doc_ids=doc_ids_of(defs.resources["store"], args.doc_id, sha))
        print(json.dumps(found, indent=2) if found else "nothing stored holds it")
        return 0
    forget(instance, defs, args.doc_id, sha, args.reason, args.retrain, args.purge)
    return 0


def lineage_command(args: argparse.Namespace) -> int:
    """Print the lineage audit of an endpoint or adapter from the instance's event log."""
    from resources.governance.lineage import LineageError, LineageReader, to_markdown, to_openlineage

    instance = _instance(args.dagster_home)
    try:
        report = LineageReader(instance).report(endpoint=args.endpoint, adapter_version=args.adapter)
    except LineageError as err:
        raise SystemExit(f"lineage: {err}") from err
    if args.format == "json":
        print(json.dumps(report, indent=2, default=str))
    elif args.format == "openlineage":
        print(json.dumps(to_openlineage(report), indent=2, default=str))
    else:
        print(to_markdown(report))
    return 0


def check_command(args: argparse.Namespace) -> int:
    """Initialise every resource of the code location as a run would and list what cannot work."""
    import importlib

    from resources.preflight import check_resources

    apply_offline_defaults()
    defs = importlib.import_module(args.module).defs  # a field with a bad literal value fails right here
    report = check_resources(defs.resources)
    for key, problems in report.items():
        print(f"{'ok  ' if not problems else 'FAIL'} {key}")
        for line in problems:
            print(f"     {line}")
    failed = sum(1 for problems in report.values() if problems)
    print(f"{len(report) - failed} resources ok, {failed} with problems")
    return 1 if failed else 0


def serve_command(args: argparse.Namespace) -> int:
    from orchestration.definitions import defs

    if args.action == "stop":
        gateway = defs.resources["gateway"].stop()
        vllm = defs.resources["vllm"].stop()
        print(f"gateway {'stopped' if gateway else 'was not running'}; vLLM {'stopped' if vllm else 'was not running'}")
    return 0


def train(instance, defs, max_steps: int = -1) -> str:
    """Run the train_adapter job (default FineTuneConfig, or a step cap) and log its progress."""
    config = {"max_steps": max_steps} if max_steps > 0 else {}
    run_config = {
        "ops": {"lora_adapter": {"config": config}},
        "loggers": {"console": {"config": {"log_level": "INFO"}}},
    }
    run = defs.resolve_job_def("train_adapter").execute_in_process(
        instance=instance, run_config=run_config, raise_on_error=False
    )
    return _outcome(run, "train_adapter")


def describe(defs) -> str:
    """Where each artifact is, with its ledger."""
    store = defs.resources["store"]
    lines = ["", "tuneforge artifacts", "==================="]
    for asset in ("raw_documents", "cleaned_documents", "redacted_documents"):
        lines.append(f"{asset}: {store.asset_dir(asset)}")
        for batch in store.partitions(asset):
            ledger = store.read_json(asset, batch, "ledger.json")
            extra = {**ledger["dropped"], **ledger["quarantined"]}
            lines.append(f"  {batch:32s} in {ledger['records_in']:4d}  kept {ledger['kept']:4d}  {json.dumps(extra) if extra else ''}")
    for asset in ("golden_dataset", "instruction_dataset", "dataset_card", "base_model", "lora_adapter", "merged_model"):
        if (store.asset_dir(asset) / "LATEST").is_file():
            lines.append(f"{asset}: {store.partition_dir(asset, store.latest(asset))}")
    card = store.read_json("dataset_card", store.latest("dataset_card"), "card.json")
    splits = ", ".join(f"{k} {v['examples']} ({v['tokens']} tokens)" for k, v in card["splits"].items())
    lines += [f"  splits: {splits}", f"  redactions: {json.dumps(card['redactions_by_entity'])}"]
    if (store.asset_dir("lora_adapter") / "LATEST").is_file():
        adapter = store.partition_dir("lora_adapter", store.latest("lora_adapter"))
        stats = json.loads((adapter / "tuneforge_manifest.json").read_text())["stats"]
        lines.append(
            f"  lora_adapter: validation loss {stats['base_eval_loss']:.4f} (base model) -> {stats['final_eval_loss']:.4f} "
            f"(adapter); {stats['steps']} steps, {stats['tokens_per_s']} tokens/s, packing efficiency "
            f"{stats['packing_efficiency']:.1%}"
        )
    lines += ["", "Open the Dagster UI with `make dev` to browse assets, checks and lineage."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    # Partitioned asset checks are a Dagster "preview" feature, used deliberately (see README).
    warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec")
    parser = argparse.ArgumentParser(prog="tuneforge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="seed the inbox with the sample corpus and materialize the asset graph")
    p.add_argument("--sample", default="data/sample/inbox", help="folder of sample batches to copy into the inbox")
    p.add_argument("--dagster-home", default=os.environ.get("DAGSTER_HOME", ".dagster"))
    p.add_argument("--skip-training", action="store_true", help="stop after the dataset stages")
    p.add_argument("--max-steps", type=int, default=-1, help="cap fine-tuning steps (default: FineTuneConfig epochs)")
    p.add_argument("--skip-serving", action="store_true", help="do not deploy the promoted adapter")
    p.set_defaults(func=demo)
    p = sub.add_parser("gateway", help="run the guardrail gateway in the foreground (GatewayServer starts it this way)")
    p.add_argument("--settings", required=True, help="GatewaySettings JSON file")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(func=gateway_command)
    p = sub.add_parser("keys", help="create or rotate a client's gateway API key")
    p.add_argument("client")
    p.add_argument("--models", required=True, help="comma-separated model names the client may call ('*' for all)")
    p.add_argument("--requests-per-minute", type=int, default=60)
    p.set_defaults(func=keys_command)
    p = sub.add_parser("rollback", help="serve a previous adapter version again (default: the one before the current)")
    p.add_argument("--to", default=None, help="adapter version to put back")
    p.add_argument("--dagster-home", default=os.environ.get("DAGSTER_HOME", ".dagster"))
    p.set_defaults(func=rollback_command)
    p = sub.add_parser("forget", help="right to be forgotten: remove a document or raw file everywhere it reached")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--doc-id", help="document id (doc_id column of raw_documents)")
    target.add_argument("--file", help="raw file (path or sha256): every record of it")
    p.add_argument("--reason", default="erasure request")
    p.add_argument("--retrain", action="store_true", help="retrain, evaluate and redeploy if an adapter was trained on it")
    p.add_argument("--purge", action="store_true", help="delete stored dataset/index/adapter versions that still hold it")
    p.add_argument("--dry-run", action="store_true", help="only list where it reached")
    p.add_argument("--dagster-home", default=os.environ.get("DAGSTER_HOME", ".dagster"))
    p.set_defaults(func=forget_command)
    p = sub.add_parser("lineage", help="lineage audit of a deployed endpoint (or an adapter version)")
    p.add_argument("--endpoint", default=None, help="served model name, e.g. support")
    p.add_argument("--adapter", default=None, help="adapter version (instead of --endpoint)")
    p.add_argument("--format", choices=["md", "json", "openlineage"], default="md")
    p.add_argument("--dagster-home", default=os.environ.get("DAGSTER_HOME", ".dagster"))
    p.set_defaults(func=lineage_command)
    p = sub.add_parser("check", help="check every resource's configuration (files, servers, models) before launching")
    p.add_argument("--module", default="orchestration.definitions", help="module whose `defs` to check")
    p.set_defaults(func=check_command)
    p = sub.add_parser("serve", help="manage the locally started vLLM and gateway")
    p.add_argument("action", choices=["stop"])
    p.set_defaults(func=serve_command)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
