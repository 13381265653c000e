"""What many tests share: the repository's paths, the sample models over temporary copies of their data, a
project over them, and recording an artifact as a materialization (what an external system registering an
artifact does)."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import yaml

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"


def _headings():
    from resources.knowledge.policy import KnowledgePolicy

    return KnowledgePolicy(strategies=["headings"])


# the document-local strategy alone (no retrieval): what tests of the segment mechanics make examples with
HEADINGS = _headings()


def sample_model(name: str, tmp: Path, copy_data: bool = True, **updates):
    """The repository's `models/<name>` with its inbox (and feedback folder) redirected to copies under `tmp`."""
    from resources.spec import ModelSpec

    attributes = yaml.safe_load((ROOT / "models" / name / "defs.yaml").read_text())["attributes"]
    inbox, feedback = tmp / name / "inbox", tmp / name / "feedback"
    if copy_data:
        shutil.copytree(SAMPLE / name / "inbox", inbox, dirs_exist_ok=True)
        if (SAMPLE / name / "feedback").is_dir():
            shutil.copytree(SAMPLE / name / "feedback", feedback, dirs_exist_ok=True)
    else:
        inbox.mkdir(parents=True, exist_ok=True)
    attributes.update(inbox=str(inbox), feedback=str(feedback) if attributes.get("feedback") else None)
    attributes.update(updates)
    return ModelSpec.model_validate(attributes)


def new_instance(home: Path):
    """A Dagster instance in `home` (created, telemetry off), found by path, not through DAGSTER_HOME."""
    from dagster import DagsterInstance

    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text((ROOT / "config" / "dagster" / "dagster.yaml").read_text())
    return DagsterInstance.from_config(str(home))


def project_for(tmp: Path, models: list, **resources):
    """A project over the repository (its redaction policy, sample golden files) with state under `tmp`; its
    forget list lives under `tmp` too, so a test that forgets a record never writes into the repository."""
    from orchestration.project import load_project
    from resources.ingestion.inbox import Inbox

    resources.setdefault("inbox", Inbox(forget_list=str(tmp / "policies" / "forget.yaml")))
    if "vllm" not in resources:  # a port no server listens on: nothing a developer runs on 8000 answers a test
        from servers.openai_server import free_port

        from resources.serving.vllm_server import VllmServer

        resources["vllm"] = VllmServer(port=free_port(), state_dir=str(tmp / ".tuneforge" / "serving"))
    return load_project(ROOT, tmp, models=models, **resources)


def record(instance, store, key, version: str, write: Callable[[Path], None], metadata: dict | None = None,
           partition: str | None = None):
    """Write an artifact and report its materialization (data version and artifact key), as if a run had made it."""
    from dagster import AssetMaterialization, MetadataValue

    from resources.artifacts import ARTIFACT_METADATA, Artifact

    artifact = Artifact.create(store, key, version, partition)
    with artifact.writing() as out:
        write(out)
    instance.report_runless_asset_event(AssetMaterialization(
        asset_key=key, partition=partition, tags={"dagster/data_version": version},
        metadata={ARTIFACT_METADATA: MetadataValue.text(artifact.key), **(metadata or {})}))
    return artifact


def copy_inputs(paths: list[Path], target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for path in paths:
        (shutil.copytree if path.is_dir() else shutil.copy2)(path, target / path.name)


WATCHED = ("DAGSTER_HOME", "HF_HUB_OFFLINE", "OMP_NUM_THREADS", "TUNEFORGE_", "AWS_", "VLLM_", "DEEPEVAL_", "GX_")


@contextmanager
def environment_unchanged():
    """Fails when the environment variables tuneforge and its tests depend on differ on leaving from entering."""
    before = {k: v for k, v in os.environ.items() if k.startswith(WATCHED)}
    yield
    after = {k: v for k, v in os.environ.items() if k.startswith(WATCHED)}
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"the test left these environment variables changed: {changed}"


def package_readmes(n: int) -> list[dict]:
    """Real documents no one on the project wrote: the long descriptions (READMEs) of installed packages."""
    import hashlib
    import importlib.metadata as md

    seen, docs = set(), []
    for dist in sorted(md.distributions(), key=lambda d: (d.metadata["Name"] or "").casefold()):
        text = dist.metadata.get_payload() or dist.metadata.get("Description") or ""
        name = dist.metadata["Name"]
        if len(text.strip()) < 500 or name in seen:
            continue
        seen.add(name)
        sha = hashlib.sha256(text.encode()).hexdigest()
        docs.append({"doc_id": sha[:20], "external_id": None, "source_path": f"{name}/README", "source_sha256": sha,
                     "source_format": "md", "line": 1, "kind": "text", "title": name, "text": text[:6000],
                     "messages": None, "pii_found": 0})
        if len(docs) == n:
            break
    return docs


def signed_batches(curator, batches: dict[str, list[dict]]):
    """Each batch's documents with their de-duplication key and MinHash (as cleaning stores them), and the loader
    `build_corpus` reads a batch through: (signed batches, load)."""
    signed = {b: [{**d, "dedup_key": k, "minhash": m} for d, (k, m) in zip(ds, curator.signatures([d["text"] for d in ds]))]
              for b, ds in batches.items()}
    return signed, lambda batch: (signed[batch], {"documents": len(signed[batch])})
