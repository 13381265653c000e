"""The code location loads, names every stage, and keeps the one-way import rule."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_definitions_load_with_every_stage_and_job():
    from orchestration.definitions import defs

    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"raw_documents", "redacted_documents", "instruction_dataset", "lora_adapter", "eval_report",
            "safety_report", "knowledge_index", "deployed_endpoint"} <= keys
    jobs = {j.name for j in defs.resolve_all_job_defs()}
    assert {"ingest_batch", "build_datasets", "train_adapter", "evaluate_adapter", "deploy_adapter"} <= jobs
    assert {"judge", "vllm", "gateway", "evaluator", "policy"} <= set(defs.resources)


def _imports(package: str) -> set[tuple[str, str]]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add((str(path.relative_to(ROOT)), node.module.split(".")[0]))
            elif isinstance(node, ast.Import):
                found.update((str(path.relative_to(ROOT)), a.name.split(".")[0]) for a in node.names)
    return found


def test_imports_flow_one_way():
    assert not [(f, m) for f, m in _imports("resources") if m in {"assets", "orchestration"}]
    assert not [(f, m) for f, m in _imports("assets") if m == "orchestration"]


def test_no_deprecated_dagster_apis():
    banned = ("compute_kind", "AutoMaterializePolicy", "SourceAsset", "config_schema", "@resource", "required_resource_keys")
    offenders = [(str(p.relative_to(ROOT)), b) for d in ("assets", "resources", "orchestration")
                 for p in (ROOT / d).rglob("*.py") for b in banned if b in p.read_text()]
    assert not offenders
