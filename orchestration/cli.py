"""`tuneforge` command line: parses arguments, calls `orchestration.workflows`, prints. Exit codes: 0 done,
1 a stage failed or a check found problems, 2 bad arguments or project."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import warnings
from pathlib import Path

from resources.offline import apply_offline_defaults


def _project(args: argparse.Namespace):
    from orchestration.project import load_project

    return load_project(args.project or ".", getattr(args, "workdir", None))


def demo_command(args: argparse.Namespace) -> int:
    """`run` on the sample project: both sample models, seeded from data/sample, to deployment."""
    from orchestration import workflows

    project = _project(args)
    workflows.seed_sample(project, Path(args.sample), print)
    return _run_and_print(project, args, demo=True)


def run_command(args: argparse.Namespace) -> int:
    from orchestration import workflows
    from orchestration.project import load_project

    if args.inbox:
        workdir = Path(args.workdir or args.project or "tuneforge-work")  # --project names where the new project goes
        project = workflows.folder_project(Path(args.inbox), workdir, [Path(g) for g in args.golden or []], args.name)
    else:
        project = load_project(args.project or ".", args.workdir)
    return _run_and_print(project, args, demo=False)


def _run_and_print(project, args, demo: bool) -> int:
    from orchestration import report, workflows

    checked = workflows.check(project)
    if args.until == "deployment" and args.skip_serving:
        args.until = "evaluation"
    needed = {k: v for k, v in checked.items() if args.until == "deployment" or k not in ("vllm", "gateway")}
    if any(needed.values()):  # before anything runs: every configuration problem at once, each naming its field
        print("configuration problems (tuneforge check):\n  " + "\n  ".join(report.problems(needed)))
        return 1
    result = workflows.run_project(project, args.until, args.max_steps, args.model, log=print)
    served = [run for run in result.models if run.endpoint]
    keys = {run.model: workflows.add_key(project, f"{run.model}-demo", [run.model, "base"]) for run in served}
    asked = {run.model: workflows.ask_examples(project, run, keys[run.model]) for run in served}
    print(report.render(project, result, keys, asked))
    return 1 if result.failed else 0


def init_command(args: argparse.Namespace) -> int:
    from orchestration import workflows

    scaffold = workflows.init_project(Path(args.dir), args.name)
    print(f"project {scaffold.root}, model {scaffold.model!r}:")
    print("\n".join(f"  wrote {f}" for f in scaffold.files) or "  (every file was there already)")
    print(f"Put your files into {Path(scaffold.root) / 'inbox'}, your golden questions into {Path(scaffold.root) / 'golden.jsonl'},"
          f" then: tuneforge run --project {scaffold.root}")
    return 0


def check_command(args: argparse.Namespace) -> int:
    """Every resource and model of the project (or of the code location `--module` defines as `defs`)."""
    import importlib

    from orchestration import report, workflows

    if args.module:
        defs = importlib.import_module(args.module).defs  # a field with a bad literal value fails right here
        found = workflows.check_definitions(defs() if callable(defs) else defs, require_data=True)
    else:
        found = workflows.check(_project(args), require_data=True)
    print("\n".join(report.problems(found)))
    return 1 if any(found.values()) else 0


def keys_command(args: argparse.Namespace) -> int:
    from orchestration import workflows

    allow = tuple(p for p in (args.allow or "").split(",") if p)
    key = workflows.add_key(_project(args), args.client, args.models.split(","), args.requests_per_minute,
                            allowed_parameters=allow, max_tokens=args.max_tokens)
    print(f"API key for {args.client!r} (shown once; only its SHA-256 is stored): {key}")
    return 0


def feedback_command(args: argparse.Namespace) -> int:
    """Review what clients sent to /v1/feedback: only approved feedback reaches a golden or training set."""
    import getpass

    from orchestration import workflows

    project = _project(args)
    if args.action == "list":
        rows = workflows.list_feedback(project, args.status, args.model)
        for r in rows:
            print(f"{r['id']:>6}  {r['status']:<8} {r['model']:<12} from {r['client']:<16} rating={r['rating'] or '-':<4} "
                  f"correction={(r['corrected_answer'] or '-')[:60]!r}")
        print(f"{len(rows)} {args.status} feedback(s)")
        return 0
    if args.action == "purge":
        if not args.client:
            raise SystemExit("tuneforge feedback purge needs --client NAME")
        print(f"deleted {workflows.purge_feedback(project, args.client)} feedback(s) sent by {args.client!r}")
        return 0
    if not args.ids:
        raise SystemExit(f"tuneforge feedback {args.action} needs feedback ids (see `tuneforge feedback list`)")
    reviewer = f"cli:{args.reviewer or getpass.getuser()}"
    done = workflows.review_feedback(project, args.ids, "approved" if args.action == "approve" else "rejected", reviewer)
    print(f"{len(done)} feedback(s) {'approved' if args.action == 'approve' else 'rejected'} by {reviewer}")
    return 0


def rollback_command(args: argparse.Namespace) -> int:
    """Put a previous adapter version of a model back in service (it must have a recorded decision to promote)."""
    from orchestration import workflows
    from resources.serving.deploy import endpoint_curl

    project = _project(args)
    spec = project.model(args.model)
    target = args.to
    if target is None:
        routes = project.definitions.resources["gateway"].routes()
        current = routes.get(spec.name, {}).get("adapter_version")
        history = [v for v in workflows.served_versions(project, spec.name) if v != current]
        if not history:
            print(f"nothing to roll back to: {spec.name} has served no other adapter (use --to VERSION)")
            return 1
        target = history[0]
    instance = workflows.open_instance(project)
    try:
        outcome, endpoint = workflows.deploy(project, instance, spec, target)
    finally:
        instance.dispose()
    outcome.raise_for_failure()
    print(f"{spec.name}: adapter {endpoint['adapter_version']} in service again (previous: {endpoint['previous_version']})")
    print("  " + endpoint_curl(endpoint["gateway_url"], spec.name, spec.serving.example_question))
    return 0


def forget_command(args: argparse.Namespace) -> int:
    from orchestration import workflows
    from resources.governance.forget import doc_ids_of, reach

    project = _project(args)
    sha = None
    if args.file:
        sha = hashlib.sha256(Path(args.file).read_bytes()).hexdigest() if Path(args.file).is_file() else args.file
    if args.dry_run:
        store = project.definitions.resources["store"]
        found = reach(store, project.names, doc_ids_of(store, project.names, args.doc_id, sha))
        print(json.dumps(found, indent=2) if found else "nothing stored holds it")
        return 0
    result = workflows.forget(project, args.doc_id, sha, args.reason, args.retrain, args.purge, log=print)
    print("reached before: " + (json.dumps(result.before, indent=2) if result.before else "nothing"))
    print("still reached: " + (json.dumps(result.after, indent=2) if result.after else "nothing"))
    return 0


def lineage_command(args: argparse.Namespace) -> int:
    from orchestration import workflows
    from resources.governance.lineage import LineageError, to_markdown, to_openlineage

    try:
        report = workflows.lineage(_project(args), args.model, args.adapter)
    except LineageError as err:
        print(f"lineage: {err}", file=sys.stderr)
        return 1
    if args.format == "json":
        print(json.dumps(report, indent=2, default=str))
    elif args.format == "openlineage":
        print(json.dumps(to_openlineage(report), indent=2, default=str))
    else:
        print(to_markdown(report))
    return 0


def serve_command(args: argparse.Namespace) -> int:
    from orchestration import workflows

    if args.action == "plan":
        from resources.serving.placement import HostResources, choose_deployment

        host = HostResources.detect()
        by_base: dict[str, list] = {}
        for spec in _project(args).models:
            by_base.setdefault(spec.base_model, []).append(spec)
        print(f"host: {'a CUDA GPU' if host.cuda else 'CPU only'}, {host.cores} cores, {host.memory_gib} GiB")
        for base, specs in by_base.items():
            choice = choose_deployment(len(specs), host)
            print(f"{base}: {len(specs)} model(s) -> {choice.mode} ({choice.reason})")
            for i, spec in enumerate(specs):
                configured = f"merged on cores {spec.serving.merged_cpus or 'all'}" if spec.serving.serve_merged else "lora"
                wanted = {}
                if spec.serving.serve_merged != choice.serve_merged:
                    wanted["serve_merged"] = str(choice.serve_merged).lower()
                if choice.serve_merged and spec.serving.merged_cpus != choice.cpus[i]:
                    wanted["merged_cpus"] = f"'{choice.cpus[i]}'"
                hint = "" if not wanted else "  (to follow the plan set " + ", ".join(
                    f"serving.{k}: {v}" for k, v in wanted.items()) + ")"
                print(f"  {spec.name}: configured {configured}{hint}")
        return 0
    gateway, vllms = workflows.stop_servers(_project(args))
    print(f"gateway {'stopped' if gateway else 'was not running'}; {vllms} vLLM server(s) stopped")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="tuneforge", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="command", required=True)

    def command(name: str, func, help: str, project: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        if project:
            p.add_argument("--project", default=None, help="project folder (holds models/<name>/defs.yaml); default: here "
                           "(with --inbox: the folder the new project is written to; default ./tuneforge-work)")
            p.add_argument("--workdir", default=None, help="where state lives (.tuneforge/, .dagster/); default: the project")
        p.set_defaults(func=func)
        return p

    def stages(p: argparse.ArgumentParser) -> None:
        p.add_argument("--until", choices=["data", "training", "evaluation", "deployment"], default="deployment",
                       help="the last stage to run (default: deployment)")
        p.add_argument("--max-steps", type=int, default=-1, help="at most N fine-tuning steps (a shorter trial run; a training block planning fewer is unchanged; "
                       "default: the model's training block)")
        p.add_argument("--model", action="append", help="only this model (repeatable; default: every model)")
        p.add_argument("--skip-serving", action="store_true", help="stop after the evaluation (same as --until evaluation)")

    p = command("demo", demo_command, "seed the sample corpus into the sample models' inboxes and run them to deployment")
    p.add_argument("--sample", default="data/sample", help="folder with <model>/inbox and <model>/feedback per model")
    stages(p)
    p = command("run", run_command, "run a project's models (or a model over --inbox DIR) through the graph")
    p.add_argument("--inbox", help="a folder of your own files: run one model over it (the folder is one batch)")
    p.add_argument("--golden", action="append", help="golden JSONL file(s) for --inbox (default: a tenth of the corpus held out)")
    p.add_argument("--name", help="model name for --inbox (default: from the folder's name)")
    stages(p)
    p = command("init", init_command, "scaffold a project: a model's YAML, an empty inbox, a golden-set template", project=False)
    p.add_argument("dir", help="the project folder to create")
    p.add_argument("--name", help="the model's name (default: from the folder's name)")
    p = command("check", check_command, "check every resource and model (files, servers, models) before launching")
    p.add_argument("--module", default=None, help="a code location module whose `defs` to check (instead of --project)")
    p = command("keys", keys_command, "create or rotate a client's gateway API key")
    p.add_argument("client")
    p.add_argument("--models", required=True, help="comma-separated model names the client may call ('*' for all)")
    p.add_argument("--requests-per-minute", type=int, default=60)
    p.add_argument("--allow", default="", help="comma-separated privileged request parameters this key may use "
                   "(n, logprobs, top_logprobs, logit_bias); every returned text is still guarded")
    p.add_argument("--max-tokens", type=int, default=1024, help="completion tokens per request (and the default)")
    p = command("feedback", feedback_command, "review clients' /v1/feedback: list, approve, reject, purge")
    p.add_argument("action", choices=["list", "approve", "reject", "purge"])
    p.add_argument("ids", nargs="*", type=int, help="feedback ids to approve or reject")
    p.add_argument("--status", default="pending", help="list: pending | approved | rejected")
    p.add_argument("--model", default=None, help="list: one model's feedback only")
    p.add_argument("--client", default=None, help="purge: the client whose feedback to delete")
    p.add_argument("--reviewer", default=None, help="your name in the review record (default: your login)")
    p = command("rollback", rollback_command, "serve a model's previous adapter again (default: the one before the current)")
    p.add_argument("--model", required=True)
    p.add_argument("--to", default=None, help="adapter version to put back")
    p = command("forget", forget_command, "right to be forgotten: remove a document or raw file everywhere it reached")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--doc-id", help="document id (doc_id column of raw_documents)")
    target.add_argument("--file", help="raw file (path or sha256): every record of it")
    p.add_argument("--reason", default="erasure request")
    p.add_argument("--retrain", action="store_true", help="retrain, evaluate and redeploy the models trained on it")
    p.add_argument("--purge", action="store_true", help="delete stored versions that still hold it")
    p.add_argument("--dry-run", action="store_true", help="only list where it reached")
    p = command("lineage", lineage_command, "lineage audit of a model's deployed endpoint (or an adapter version)")
    p.add_argument("--model", required=True)
    p.add_argument("--adapter", default=None, help="adapter version (default: what the endpoint serves)")
    p.add_argument("--format", choices=["md", "json", "openlineage"], default="md")
    p = command("serve", serve_command, "stop the locally started vLLM servers and gateway, or print the serving plan "
                "for this host (runtime LoRA or merged per model)")
    p.add_argument("action", choices=["stop", "plan"])
    return top


def main(argv: list[str] | None = None) -> int:
    from orchestration.project import ProjectError
    from orchestration.workflows import WorkflowError

    from dagster import BetaWarning, PreviewWarning

    apply_offline_defaults()
    # Partitioned asset checks, components and user data versions are Dagster preview/beta features, used
    # deliberately (see README): their warnings would drown the output.
    warnings.filterwarnings("ignore", category=BetaWarning)
    warnings.filterwarnings("ignore", category=PreviewWarning)
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except ProjectError as err:
        print(f"tuneforge: {err}", file=sys.stderr)
        return 2
    except WorkflowError as err:
        print(f"tuneforge: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
