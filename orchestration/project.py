"""A tuneforge project: a folder whose `models/` holds one sub-folder per model, each with a `defs.yaml` that
declares a `TuneforgeModel` Dagster component; the models share the project's resources and state.

    my-project/
      models/support/defs.yaml     # one model: name, inbox, golden files, base model, training, policies
      models/policy/defs.yaml
      policies/redaction.yaml      # (optional) the default redaction policy, the forget list
      .tuneforge/                  # state: artifacts, serving, checkpoints (the work folder)
      .dagster/                    # the project-local Dagster instance

Loading goes through Dagster's own component loader, so `dagster dev` and `dg` see the same models; a YAML error
fails at load naming the file, the model and the field.
"""

from __future__ import annotations

import re
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from dagster import Definitions

from orchestration.model import TuneforgeModel, model_definitions
from orchestration.resources import shared_resources, state_dir
from orchestration.sensors import run_failure_alerts
from resources.spec import ModelSpec

MODELS_FOLDER = "models"
# Asset folders of a project from before models were declared in YAML (one model, un-prefixed keys).
LEGACY_ASSETS = ("raw_documents", "cleaned_documents", "redacted_documents", "instruction_dataset", "lora_adapter",
                 "eval_report", "deployed_endpoint")


class ProjectError(ValueError):
    """The project cannot be loaded; the message says which file, model and field, and what to do."""


@dataclass
class Project:
    root: Path  # the project folder (models/ lives here)
    workdir: Path  # where the state lives (default: the project folder)
    models: list[ModelSpec] = field(default_factory=list)
    definitions: Definitions | None = None

    @property
    def state(self) -> Path:
        return state_dir(self.workdir)

    @property
    def dagster_home(self) -> Path:
        return self.workdir / ".dagster"

    def model(self, name: str) -> ModelSpec:
        for spec in self.models:
            if spec.name == name:
                return spec
        raise ProjectError(f"no model {name!r} in {self.root / MODELS_FOLDER} (models: {', '.join(self.names) or 'none'})")

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.models]


def load_project(root: str | Path = ".", workdir: str | Path | None = None, models: list[ModelSpec] | None = None,
                 **resource_overrides) -> Project:
    """The project at `root` with its models (from `models/*/defs.yaml`, or the `models` given) and its
    Definitions: every model's graph plus the shared resources and the run-failure sensor."""
    root = Path(root).resolve()
    work = Path(workdir).resolve() if workdir else root
    refuse_legacy_state(work)
    if models is None:
        models, per_model = _load_components(root)
    else:
        models = [m.resolved(root) for m in models]
        per_model = [model_definitions(m) for m in models]
    _unique(models, root)
    definitions = Definitions.merge(
        *per_model, Definitions(sensors=[run_failure_alerts], resources=shared_resources(root, work, **resource_overrides)))
    return Project(root, work, models, definitions)


def _load_components(root: Path) -> tuple[list[ModelSpec], list[Definitions]]:
    from dagster.components.core.component_tree import ComponentTree, ComponentTreeException

    folder = root / MODELS_FOLDER
    if not folder.is_dir() or not any(folder.glob("*/defs.yaml")):
        raise ProjectError(f"no models declared in {folder}: add models/<name>/defs.yaml (`tuneforge init {root}` "
                           "scaffolds one)")
    name = f"tuneforge_project_{abs(hash(str(folder)))}"
    module = types.ModuleType(name)
    module.__path__ = [str(folder)]
    module.__file__ = str(folder / "__init__.py")
    sys.modules[name] = module
    tree = ComponentTree.from_module(defs_module=module, project_root=root)
    try:
        components = tree.get_all_components(TuneforgeModel)
        definitions = tree.build_defs()
    except ComponentTreeException as err:
        raise ProjectError(_syntax_message(err) or _yaml_message(err, folder)) from None
    except yaml.YAMLError as err:
        raise ProjectError(_syntax_message(err) or f"{folder}: {err}") from None
    return [c.spec(root) for c in components], [definitions]


def _syntax_message(err: BaseException) -> str | None:
    """A YAML syntax error (anywhere in the cause chain) as one line: file:line:column, what the parser expected."""
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, yaml.MarkedYAMLError):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return None
    mark = cause.problem_mark or cause.context_mark
    where = f"{mark.name}:{mark.line + 1}:{mark.column + 1}" if mark is not None else "?"
    what = "; ".join(p for p in (cause.problem, cause.context) if p)
    return f"{where}: invalid YAML: {what}"


def _yaml_message(err: Exception, folder: Path) -> str:
    """The YAML problem as a user reads it: file:line, model, field, reason (pydantic's noise left out)."""
    from pydantic import ValidationError

    cause, chain = err, []
    while cause is not None and not isinstance(cause, ValidationError):
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    if cause is None:  # not a YAML value: say what actually failed (the innermost error), not only where
        inner = chain[-1] if chain else err
        return f"{folder}: {err}" + (f"\n  caused by {type(inner).__name__}: {inner}" if inner is not err else "")
    lines = []
    for problem in cause.errors():
        location = ".".join(str(p) for p in problem["loc"])
        path, _, where = location.partition(" at ")
        parts = [p for p in re.split(r"\.(?![^\[]*\])", path) if p != "attributes" and not p.startswith("function-")
                 and not p[:1].isupper()]  # validator wrappers and model class names in pydantic's location
        if parts[-1:] == ["str"]:
            continue  # the "or a template string" alternative Dagster's resolver adds
        model = Path(where.split(":")[0]).parent.name if where else "?"
        lines.append(f"{where or folder}: model {model!r}, field {'.'.join(parts) or '(top)'}: "
                     f"{problem['msg'].removeprefix('Value error, ')}")
    return "invalid model declaration:\n  " + "\n  ".join(dict.fromkeys(lines)) if lines else f"{folder}: {err}"


def _unique(models: list[ModelSpec], root: Path) -> None:
    seen: dict[str, int] = {}
    for spec in models:
        seen[spec.name] = seen.get(spec.name, 0) + 1
    twice = [n for n, count in seen.items() if count > 1]
    if twice:
        raise ProjectError(f"{root / MODELS_FOLDER}: model name(s) {', '.join(twice)} declared more than once; each model "
                           "needs its own name (it is its served name and asset-key prefix)")


def refuse_legacy_state(workdir: Path) -> None:
    """State of a single-model project from before models were declared in YAML is never silently re-used under the
    new keys: refuse, saying what to do."""
    artifacts = state_dir(workdir) / "artifacts"
    legacy = [a for a in LEGACY_ASSETS if (artifacts / a).is_dir()]
    if legacy:
        raise ProjectError(
            f"{artifacts} holds artifacts of a single-model tuneforge project ({', '.join(legacy)}), from before models "
            "were declared in models/<name>/defs.yaml; their keys are now <model>/<asset>. tuneforge does not re-use them "
            f"under new keys. Move the old state aside and run again: mv {state_dir(workdir)} {state_dir(workdir)}.v1 && "
            f"mv {workdir / '.dagster'} {workdir / '.dagster'}.v1 (the old instance can still be browsed with "
            "DAGSTER_HOME pointing there).")


def refuse_legacy_instance(instance, workdir: Path) -> None:
    """The same for a Dagster instance that holds materializations of un-prefixed (single-model) asset keys."""
    keys = [k for k in instance.get_asset_keys() if len(k.path) == 1 and k.path[0] in LEGACY_ASSETS]
    if keys:
        raise ProjectError(
            f"the Dagster instance in {workdir / '.dagster'} records a single-model tuneforge project "
            f"({', '.join(k.to_user_string() for k in keys)}); its keys are now <model>/<asset>. Move it aside "
            f"(mv {workdir / '.dagster'} {workdir / '.dagster'}.v1) and run again.")
