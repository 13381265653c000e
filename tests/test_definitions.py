"""The code location loads both sample models from their YAML, keys every asset under its model, refuses a bad
declaration naming the file, the model and the field, refuses the state of a pre-YAML project, and keeps the
one-way import rules (between the top-level packages and inside resources/)."""

import ast
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from helpers import ROOT

STAGES = ("raw_documents", "cleaned_documents", "redacted_documents", "corpus", "golden_dataset", "instruction_dataset",
          "knowledge_index", "base_model", "lora_adapter", "eval_report", "safety_report", "promotion_decision",
          "champion", "deployed_endpoint", "governance_audit", "drift_report")


def test_both_sample_models_load_from_yaml_each_under_its_name():
    from orchestration.project import load_project

    project = load_project(ROOT)
    assert project.names == ["policy", "support"] or sorted(project.names) == ["policy", "support"]
    defs = project.definitions
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    for model in ("support", "policy"):
        assert {f"{model}/{stage}" for stage in STAGES} <= keys
        jobs = {j.name for j in defs.resolve_all_job_defs()}
        assert {f"{model}_{j}" for j in ("ingest_batch", "build_datasets", "train_adapter", "evaluate_adapter",
                                           "deploy_adapter", "retrain", "monitor", "evaluate_champion")} <= jobs
        assert {f"{model}_inbox_sensor", f"{model}_retraining_sensor", f"{model}_datasets_automation"} <= \
            {s.name for s in defs.sensors}
    assert not [k for k in keys if "/" not in k], "every asset lives under a model's name"
    assert {"judge", "vllm", "gateway", "evaluator", "store", "io_manager", "request_log"} <= set(defs.resources)
    support = project.model("support")
    declared = yaml.safe_load((ROOT / "models" / "support" / "defs.yaml").read_text())["attributes"]
    assert support.inbox == str(ROOT / "data" / "inbox" / "support")
    assert support.training.max_steps == declared["training"]["max_steps"]
    from dagster import DefaultSensorStatus  # the sample models retrain on new data by themselves

    assert all(s.default_status == DefaultSensorStatus.RUNNING for s in defs.sensors if s.name.endswith("_retraining_sensor"))
    assert project.model("policy").golden == [str(ROOT / "data" / "sample" / "policy" / "golden.jsonl")]
    graph = defs.resolve_asset_graph()
    assert graph.get(project_key("support", "lora_adapter")).group_name == "support"
    assert graph.get(project_key("policy", "lora_adapter")).owners == ["team:trust-and-safety"]


def project_key(model, asset):
    from dagster import AssetKey

    return AssetKey([model, asset])


def test_the_launchpad_shows_a_models_yaml_training_block_as_the_defaults():
    from orchestration.project import load_project

    job = load_project(ROOT).definitions.resolve_job_def("policy_train_adapter")
    config = job.run_config_schema.config_type.fields["ops"].config_type.fields["policy__lora_adapter"].config_type
    fields = config.fields["config"].config_type.fields
    declared = yaml.safe_load((ROOT / "models" / "policy" / "defs.yaml").read_text())["attributes"]["training"]
    assert {name: fields[name].default_value for name in declared} == declared
    assert fields["max_length"].default_value == 512  # what the YAML leaves out keeps FineTuneConfig's default


def write_model(root, name, text):
    folder = root / "models" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "defs.yaml").write_text(text)


def test_a_yaml_error_names_the_file_the_model_and_the_field(tmp_path):
    from orchestration.project import ProjectError, load_project

    write_model(tmp_path, "good", "type: orchestration.model.TuneforgeModel\nattributes:\n  name: good\n  inbox: in\n")
    write_model(tmp_path, "bad", "type: orchestration.model.TuneforgeModel\nattributes:\n  name: bad\n  inbox: in\n"
                "  training:\n    lora_r: many\n")
    with pytest.raises(ProjectError) as err:
        load_project(tmp_path)
    message = str(err.value)
    assert "models/bad/defs.yaml:" in message and "model 'bad', field training.lora_r:" in message
    assert "valid integer" in message

    write_model(tmp_path, "bad", "type: orchestration.model.TuneforgeModel\nattributes:\n  name: bad\n  inbox: in\n"
                "  trainig: {}\n")
    with pytest.raises(ProjectError, match=r"model 'bad', field trainig: Extra inputs are not permitted"):
        load_project(tmp_path)

    write_model(tmp_path, "bad", "type: orchestration.model.TuneforgeModel\nattributes:\n  name: bad\n  inbox: in\n"
                "  training:\n    lora_r: 8\n    learning_rat: 0.001\n")  # a misspelt key inside a block, too
    with pytest.raises(ProjectError, match=r"defs.yaml:5: model 'bad', field training.learning_rat: Extra inputs are not "
                                           r"permitted"):
        load_project(tmp_path)

    write_model(tmp_path, "bad", "type: orchestration.model.TuneforgeModel\nattributes:\n  name: bad\n  inbox: [in\n"
                "  training:\n    lora_r: 8\n")  # a YAML syntax error: one line, file:line:column
    with pytest.raises(ProjectError) as err:
        load_project(tmp_path)
    assert str(err.value) == (f"{tmp_path / 'models' / 'bad' / 'defs.yaml'}:5:11: invalid YAML: expected ',' or ']', "
                              "but got ':'; while parsing a flow sequence")

    write_model(tmp_path, "bad", "type: orchestration.model.TuneforgeModel\nattributes:\n  name: Bad-Name\n  inbox: in\n")
    with pytest.raises(ProjectError, match=r"field name: model name 'Bad-Name' must be lower case"):
        load_project(tmp_path)

    write_model(tmp_path, "bad", "type: orchestration.model.TuneforgeModel\nattributes:\n  name: good\n  inbox: in\n")
    with pytest.raises(ProjectError, match="good declared more than once"):
        load_project(tmp_path)


def test_a_project_without_models_says_how_to_make_one(tmp_path):
    from orchestration.project import ProjectError, load_project

    with pytest.raises(ProjectError, match=r"no models declared in .*models: add models/<name>/defs.yaml \(`tuneforge init"):
        load_project(tmp_path)


def test_the_state_of_a_single_model_project_is_refused_not_reused(tmp_path, dagster_instance):
    """A `.tuneforge/` of the single-model layout (artifacts keyed `lora_adapter/...`) is never silently re-used under
    the new keys, and neither is a Dagster instance that recorded un-prefixed asset keys."""
    from dagster import AssetKey, AssetMaterialization

    from orchestration.project import ProjectError, load_project, refuse_legacy_instance

    shutil.copytree(ROOT / "models", tmp_path / "models")
    (tmp_path / ".tuneforge" / "artifacts" / "lora_adapter" / "abc").mkdir(parents=True)
    with pytest.raises(ProjectError, match=r"single-model tuneforge project \(lora_adapter\).*mv .*\.tuneforge .*\.tuneforge\.v1"):
        load_project(tmp_path)
    dagster_instance.report_runless_asset_event(AssetMaterialization(asset_key=AssetKey("lora_adapter")))
    with pytest.raises(ProjectError, match=r"records a single-model tuneforge project \(lora_adapter\)"):
        refuse_legacy_instance(dagster_instance, tmp_path)


def test_definitions_validate_from_the_workspace(tmp_path):
    """`dagster definitions validate` as a user runs it on a fresh clone: a DAGSTER_HOME that exists, nothing else."""
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Validation successful" in result.stderr + result.stdout


def _imports(package: str):
    """(file, imported module) for every import in the package, module docstrings and comments excluded."""
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add((path.relative_to(ROOT).as_posix(), node.module))
            elif isinstance(node, ast.Import):
                found.update((path.relative_to(ROOT).as_posix(), a.name) for a in node.names)
    return found


def test_imports_flow_one_way_between_the_top_level_packages():
    assert not [(f, m) for f, m in _imports("resources") if m.split(".")[0] in {"assets", "orchestration"}]
    assert not [(f, m) for f, m in _imports("assets") if m.split(".")[0] == "orchestration"]


# Inside resources/, a module may import only from its own package and from packages below it: what two stages
# share (the request log, the safety rules, storage and records) lives below both.
LAYERS = [
    {"atomic", "offline", "preflight", "records", "provenance", "plots", "threads", "host"},
    {"storage", "quality", "requestlog", "dedup"},
    {"artifacts", "segments"},
    {"redaction", "safety"},
    {"knowledge"},
    {"ingestion"},
    {"curation", "contamination"},
    {"datasets"},
    {"retrieval"},
    {"models"},
    {"training"},
    {"evaluation"},
    {"serving"},
    {"monitoring"},
    {"governance"},
    {"spec"},
]


def _layer(name: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if name in layer)


def test_imports_inside_resources_flow_downward():
    wrong = []
    for path, module in _imports("resources"):
        if not module.startswith("resources."):
            continue
        source = path.split("/")[1].removesuffix(".py")
        target = module.split(".")[1]
        if source != target and _layer(target) >= _layer(source):
            wrong.append((path, module))
    assert wrong == []


def test_no_deprecated_dagster_apis():
    banned = {"compute_kind", "AutoMaterializePolicy", "SourceAsset", "config_schema", "required_resource_keys"}
    offenders = []
    for folder in ("assets", "resources", "orchestration"):
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else \
                    node.arg if isinstance(node, ast.keyword) else None
                if name in banned or (isinstance(node, ast.Name) and node.id == "resource" and
                                      isinstance(getattr(node, "ctx", None), ast.Load) and _decorates(tree, node)):
                    offenders.append((path.relative_to(ROOT).as_posix(), name))
    assert offenders == []


def _decorates(tree, name_node) -> bool:
    return any(name_node in getattr(f, "decorator_list", []) for f in ast.walk(tree))
