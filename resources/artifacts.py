"""Typed, versioned handoffs between stages: a step reads exactly the materialization Dagster records.

Every asset writes its artifact into the `ArtifactStore` (atomic, owner-only, sealed on the remote) under a
content version and returns an `Artifact` that names it. `ArtifactIOManager` records that name on the
materialization, and hands each downstream step the `Artifact` of one recorded materialization:

1. a materialization pinned by the run (tag `tuneforge/input/<asset key>` = its storage id: what a sensor
   sets so that the run it starts uses exactly the version whose checks passed);
2. else the upstream's materialization in this run (or in the run this one re-executes): a run evaluates,
   gates and deploys what it trained, also when another run materialized the asset in the meantime;
3. else the latest materialization when the step started: the record Dagster takes for the step's
   provenance at that moment (for a partitioned upstream, the latest of each partition at that moment).

Where 1 or 2 differ from what Dagster took at step start, the step's provenance record is corrected to what
was loaded, so the materialization's `dagster/input_data_version/*` tags, the `inputs` metadata this manager
adds and the lineage audit all say what the step read. Nothing is found through a mutable pointer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    ConfigurableIOManager,
    DagsterEventType,
    InputContext,
    MetadataValue,
    OutputContext,
)

from resources.records import sha256_hex
from resources.storage import ArtifactStore

PIN_TAG_PREFIX = "tuneforge/input/"  # + asset key (user string) = storage id of the materialization to load
ARTIFACT_METADATA = "artifact"  # the store key of the artifact, on every materialization
OPTIONAL = "tuneforge/optional"
OWN_RUN_SCAN = 500  # the newest materializations of an upstream searched for the run's own  # AssetIn metadata: None (not an error) when never materialized


class UpstreamMissingError(LookupError):
    """A step's input has no materialization to load."""


def store_name(key: AssetKey) -> str:
    """The artifact store folder of an asset: its key path (`support/lora_adapter`)."""
    return "/".join(key.path)


def version_of(content: Any, inputs: Mapping[str, Any] | None = None, config: Any = None, code: str = "1") -> str:
    """A data version: the hash of the artifact's content, the versions it was made from and the config
    (and code version) that shaped it. Any of them changing gives a new version."""
    payload = json.dumps({"content": content, "inputs": dict(sorted((inputs or {}).items())), "config": config,
                          "code": code}, sort_keys=True, default=str)
    return sha256_hex(payload)[:24]


SECRET_FIELDS = ("api_key", "pseudonym_key", "password", "token", "secret")


def config_of(*objects: Any) -> list[Any]:
    """The configuration of resources / config models that shapes an artifact, for its version: every field
    but secrets (which must never reach a version, a log or an artifact)."""
    import dataclasses

    def public(data: Any) -> Any:
        if isinstance(data, dict):
            return {k: public(v) for k, v in data.items() if not any(s in str(k) for s in SECRET_FIELDS)}
        if isinstance(data, (list, tuple)):
            return [public(v) for v in data]
        return data

    out = []
    for obj in objects:
        if hasattr(obj, "model_dump"):
            data = obj.model_dump(mode="json")
        elif dataclasses.is_dataclass(obj):
            data = dataclasses.asdict(obj)
        else:
            data = obj
        out.append(public(data))
    return out


def partitions_version(versions: Mapping[str, str]) -> str:
    """Dagster's input data version for a partitioned upstream: sha256 of the partitions' data versions in
    partition-key order (see dagster's DataVersionCache)."""
    return hashlib.sha256("".join(v for _, v in sorted(versions.items())).encode()).hexdigest()


@dataclass(frozen=True)
class Artifact:
    """One stored artifact version, as the materialization that recorded it names it."""

    asset: str  # store folder, e.g. "support/lora_adapter"
    key: str  # store key: the version, or "<partition>@<version>" for a partitioned asset
    data_version: str
    partition: str | None = None
    storage_id: int | None = None  # the materialization event (None before it is recorded)
    run_id: str | None = None
    store: ArtifactStore = field(default_factory=ArtifactStore, repr=False, compare=False)

    @classmethod
    def create(cls, store: ArtifactStore, key: AssetKey, version: str, partition: str | None = None) -> "Artifact":
        """The artifact an asset is about to write: `version` under the asset's folder (with the partition)."""
        return cls(store_name(key), f"{partition}@{version}" if partition else version, version, partition, store=store)

    def writing(self):
        """Write the artifact atomically (the store's `writing`: a temporary folder swapped in, owner-only,
        uploaded and sealed when there is a remote)."""
        return self.store.writing(self.asset, self.key)

    def publish(self) -> None:
        """Upload and seal a folder written outside `writing()` (by the trainer process, say)."""
        self.store.publish(self.asset, self.key)

    @property
    def version(self) -> str:
        return self.data_version

    @property
    def path(self) -> Path:
        """The local folder (fetched from the remote store if only the remote has it)."""
        return self.store.local(self.asset, self.key)

    def file(self, name: str) -> Path:
        return self.store.path(self.asset, self.key, name)

    def exists(self, name: str) -> bool:
        return self.store.exists(self.asset, self.key, name)

    def read_table(self, name: str = "documents.parquet", columns: list[str] | None = None) -> pd.DataFrame:
        return pd.read_parquet(self.file(name), columns=columns)

    def read_json(self, name: str) -> Any:
        return json.loads(self.file(name).read_text(encoding="utf-8"))

    def read_json_or_none(self, name: str, default: Any = None) -> Any:
        return self.read_json(name) if self.exists(name) else default

    def describe(self) -> dict[str, Any]:
        return {"data_version": self.data_version, "storage_id": self.storage_id, "run_id": self.run_id,
                **({"partition": self.partition} if self.partition else {})}


class Batches(Mapping[str, Artifact]):
    """A partitioned upstream as one input: partition key -> the artifact of that partition's recorded
    materialization (partitions registered but never materialized are absent)."""

    def __init__(self, asset: str, artifacts: Mapping[str, Artifact]):
        self.asset = asset
        self._artifacts = dict(sorted(artifacts.items()))

    def __getitem__(self, partition: str) -> Artifact:
        return self._artifacts[partition]

    def __iter__(self) -> Iterator[str]:
        return iter(self._artifacts)

    def __len__(self) -> int:
        return len(self._artifacts)

    def versions(self) -> dict[str, str]:
        return {p: a.data_version for p, a in self._artifacts.items()}

    def combined_version(self) -> str:
        return partitions_version(self.versions())

    def describe(self) -> dict[str, Any]:
        return {"data_version": self.combined_version(), "partitions": {p: a.describe() for p, a in self.items()}}


class ArtifactIOManager(ConfigurableIOManager):
    """Records each asset's `Artifact` on its materialization and resolves inputs to recorded
    materializations (see the module docstring for the rule)."""

    store: ArtifactStore

    # -- outputs -----------------------------------------------------------------------------------
    def handle_output(self, context: OutputContext, obj: Artifact) -> None:
        if not isinstance(obj, Artifact):
            raise TypeError(f"{context.asset_key.to_user_string()} returned {type(obj).__name__}; tuneforge assets "
                            "return the Artifact they wrote to the artifact store")
        expected = store_name(context.asset_key)
        if obj.asset != expected:
            raise ValueError(f"{context.asset_key.to_user_string()} returned the artifact of {obj.asset!r}")
        if not self.store.exists(obj.asset, obj.key):
            raise FileNotFoundError(f"{obj.asset}[{obj.key}] was not written to the artifact store")
        loaded = _loaded(context)
        context.add_output_metadata({
            ARTIFACT_METADATA: MetadataValue.text(obj.key),
            "path": MetadataValue.path(str(self.store.partition_dir(obj.asset, obj.key))),
            **({"inputs": MetadataValue.json(loaded)} if loaded else {}),
        })

    # -- inputs ------------------------------------------------------------------------------------
    def load_input(self, context: InputContext) -> Artifact | Batches | None:
        key = context.asset_key
        step = _step(context)
        if _wants_batches(context):
            loaded = self._load_partitions(context, key, step)
            _remember(context, key, loaded.describe())
            return loaded
        partition = context.asset_partition_keys[0] if context.has_asset_partitions else None
        record = self._resolve(context, key, partition, step)
        if record is None:
            if context.definition_metadata.get(OPTIONAL):
                _remember(context, key, {"data_version": "INITIAL", "storage_id": None, "missing": True})
                return None
            where = f" partition {partition!r}" if partition else ""
            raise UpstreamMissingError(f"{key.to_user_string()}{where} has not been materialized yet: materialize it "
                                       "first (see `tuneforge run` or the model's jobs)")
        artifact = self._artifact(key, record)
        if step is not None and partition is None:
            _correct_provenance(step, key, record, artifact.data_version)
        elif step is not None:
            _correct_provenance(step, key, record, partitions_version({partition: artifact.data_version}))
        _remember(context, key, artifact.describe())
        return artifact

    def _artifact(self, key: AssetKey, record) -> Artifact:
        materialization = record.event_log_entry.asset_materialization
        meta = materialization.metadata.get(ARTIFACT_METADATA)
        if meta is None:
            raise UpstreamMissingError(f"{key.to_user_string()} (materialization {record.storage_id}) names no stored "
                                       "artifact: it was not materialized by tuneforge")
        return Artifact(asset=store_name(key), key=str(meta.value), partition=materialization.partition,
                        data_version=materialization.tags.get("dagster/data_version") or str(meta.value),
                        storage_id=record.storage_id, run_id=record.run_id, store=self.store)

    def _resolve(self, context: InputContext, key: AssetKey, partition: str | None, step):
        instance = context.instance
        run = step.dagster_run if step is not None else None
        pinned = run.tags.get(PIN_TAG_PREFIX + key.to_user_string()) if run is not None and partition is None else None
        if pinned:
            record = _by_storage_id(instance, key, int(pinned))
            if record is None:
                raise UpstreamMissingError(f"run tag {PIN_TAG_PREFIX}{key.to_user_string()} = {pinned}: no such "
                                           "materialization")
            return record
        own = _own_run_record(instance, run, key, partition) if run is not None else None
        if own is not None:
            return own
        at_start = _recorded(step, key)
        if at_start is not None and partition is None:
            return _by_storage_id(instance, key, at_start.storage_id)
        flt = AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None,
                                 before_storage_id=at_start.storage_id + 1 if at_start is not None else None)
        return next(iter(instance.fetch_materializations(flt, limit=1).records), None)

    def _load_partitions(self, context: InputContext, key: AssetKey, step) -> Batches:
        """Fan-in: each partition's latest materialization at step start (or this run's own)."""
        instance = context.instance
        wanted = set(context.asset_partition_keys)
        at_start = _recorded(step, key)
        run = step.dagster_run if step is not None else None
        own = _own_run_records(instance, run, key) if run is not None else {}
        latest = instance.event_log_storage.get_latest_storage_id_by_partition(key, DagsterEventType.ASSET_MATERIALIZATION)
        chosen: dict[str, int] = {}
        for partition, storage_id in latest.items():
            if partition not in wanted:
                continue
            if partition in own:
                chosen[partition] = own[partition]
            elif at_start is None or storage_id <= at_start.storage_id:
                chosen[partition] = storage_id
            else:  # re-materialized since the step started: the one before
                flt = AssetRecordsFilter(asset_key=key, asset_partitions=[partition], before_storage_id=at_start.storage_id + 1)
                record = next(iter(instance.fetch_materializations(flt, limit=1).records), None)
                if record is not None:
                    chosen[partition] = record.storage_id
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=key, storage_ids=list(chosen.values())), limit=max(1, len(chosen))).records
        artifacts = {r.event_log_entry.asset_materialization.partition: self._artifact(key, r) for r in records}
        batches = Batches(store_name(key), artifacts)
        if step is not None and records and any(partition in own for partition in chosen):
            newest = max(records, key=lambda r: r.storage_id)
            _correct_provenance(step, key, newest, batches.combined_version())
        return batches


def materialization_record(instance, artifact: Artifact):
    """The materialization event an artifact was loaded from (None before it was recorded)."""
    if artifact.storage_id is None:
        return None
    return _by_storage_id(instance, AssetKey(artifact.asset.split("/")), artifact.storage_id)


def loaded_pointers(record) -> dict[AssetKey, int]:
    """Upstream asset key -> storage id of the materialization a recorded materialization loaded (its
    `dagster/input_event_pointer/*` tags)."""
    prefix = "dagster/input_event_pointer/"
    tags = record.event_log_entry.asset_materialization.tags
    return {AssetKey.from_user_string(k.removeprefix(prefix)): int(v) for k, v in tags.items()
            if k.startswith(prefix) and v.isdigit()}


# -- what the blocking checks said about one materialization -----------------------------------------------
def check_status(instance, record, check_names: list[str]) -> dict[str, str]:
    """check name -> passed | failed | pending (planned in the materialization's run, which is still going) |
    skipped (planned, but that run ended without it) | not run,
    for the checks of `record`'s asset evaluated against exactly that materialization."""
    from dagster import AssetCheckKey
    from dagster._core.event_api import PartitionKeyFilter
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

    materialization = record.event_log_entry.asset_materialization
    partition = PartitionKeyFilter(key=materialization.partition) if materialization.partition else None
    status = {}
    for name in check_names:
        check_key = AssetCheckKey(materialization.asset_key, name)
        history = instance.event_log_storage.get_asset_check_execution_history(check_key, limit=50, partition_filter=partition)
        status[name] = "not run"
        for execution in history:
            evaluation = execution.evaluation
            target = getattr(evaluation, "target_materialization_data", None) if evaluation is not None else None
            if target is not None and target.storage_id == record.storage_id:
                status[name] = "passed" if evaluation.passed else "failed"
                break
            if execution.status == AssetCheckExecutionRecordStatus.PLANNED and execution.run_id == record.run_id:
                run = instance.get_run_by_id(record.run_id)
                status[name] = "skipped" if run is not None and run.is_finished else "pending"
                break
    return status


def check_statuses(instance, asset_key: AssetKey, targets: dict[str, int], check_names: list[str]) -> dict[str, dict[str, str] | None]:
    """`check_status` for many partitions of one asset at once: `targets` maps each partition to the storage id of
    the materialization loaded. One query per check (not one per partition and check): a partition whose latest
    execution of every check evaluated exactly that materialization gets its verdicts; the others get None (ask
    `check_status`, which reads their history)."""
    from dagster import AssetCheckKey
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus as Status

    keys = [AssetCheckKey(asset_key, name) for name in check_names]
    try:
        infos = instance.event_log_storage.get_asset_check_partition_info(keys, partition_keys=list(targets))
    except NotImplementedError:
        return dict.fromkeys(targets)
    latest = {(info.check_key.name, info.partition_key): info for info in infos}
    verdicts: dict[str, dict[str, str] | None] = {}
    for partition, storage_id in targets.items():
        found = {}
        for name in check_names:
            info = latest.get((name, partition))
            if (info is not None and info.latest_target_materialization_storage_id == storage_id
                    and info.latest_execution_status in (Status.SUCCEEDED, Status.FAILED)):
                found[name] = "passed" if info.latest_execution_status == Status.SUCCEEDED else "failed"
        verdicts[partition] = found if len(found) == len(check_names) else None
    return verdicts


# -- helpers over Dagster's step context ---------------------------------------------------------------
def _step(context: InputContext):
    try:
        return context.step_context
    except Exception:  # built outside a run (build_input_context): no step, no provenance to keep
        return None


def _wants_batches(context: InputContext) -> bool:
    """The input is annotated `Batches`: every partition of a partitioned upstream (or a window of them)."""
    try:
        return context.has_asset_partitions and context.dagster_type.typing_type is Batches
    except Exception:
        return False


def _recorded(step, key: AssetKey):
    """The input record Dagster took at step start for `key` (None if none or outside a run)."""
    if step is None:
        return None
    records = step.input_asset_records or {}
    return records.get(key)


def _by_storage_id(instance, key: AssetKey, storage_id: int):
    return next(iter(instance.fetch_materializations(AssetRecordsFilter(asset_key=key, storage_ids=[storage_id]),
                                                     limit=1).records), None)


def _run_lineage(instance, run) -> list[str]:
    """This run and the runs it re-executes (parent first-order), newest first."""
    ids, seen = [], 0
    while run is not None and seen < 20:
        ids.append(run.run_id)
        run = instance.get_run_by_id(run.parent_run_id) if run.parent_run_id else None
        seen += 1
    return ids


def _own_run_records(instance, run, key: AssetKey, partitions: list[str] | None = None) -> dict[str | None, int]:
    """partition (None when unpartitioned) -> storage id (in the asset index) of `key`'s latest materialization in the
    nearest run of this run's lineage (itself, then the runs it re-executes) that materialized it."""
    lineage = _run_lineage(instance, run)
    flt = AssetRecordsFilter(asset_key=key, asset_partitions=partitions)
    recent = instance.fetch_materializations(flt, limit=OWN_RUN_SCAN).records  # newest first
    for run_id in lineage:
        found: dict[str | None, int] = {}
        for record in recent:
            if record.run_id == run_id:
                found.setdefault(record.event_log_entry.asset_materialization.partition, record.storage_id)
        if found:
            return found
    return {}


def _own_run_record(instance, run, key: AssetKey, partition: str | None):
    storage_id = _own_run_records(instance, run, key, [partition] if partition else None).get(partition)
    return _by_storage_id(instance, key, storage_id) if storage_id else None


def _correct_provenance(step, key: AssetKey, record, data_version: str) -> None:
    """Make the step's provenance record (what Dagster writes as `dagster/input_*` tags) the materialization
    that was loaded, where Dagster's step-start snapshot took another one."""
    from dagster import DataVersion
    from dagster._core.execution.context.data_version_cache import InputAssetVersionInfo

    records = step.input_asset_records
    current = records.get(key) if records is not None else None
    if current is None or (current.storage_id == record.storage_id and current.data_version
                           and current.data_version.value == data_version):
        return
    if not isinstance(records, dict):  # pragma: no cover - a Dagster change; the provenance test catches it
        raise RuntimeError("tuneforge cannot correct this step's input provenance on this Dagster version")
    step.log.warning(f"{key.to_user_string()}: this step reads materialization {record.storage_id} (run "
                     f"{record.run_id[:8]}), not the newer {current.storage_id} another run made since")
    records[key] = InputAssetVersionInfo(record.storage_id, DagsterEventType.ASSET_MATERIALIZATION,
                                         DataVersion(data_version), record.run_id, record.timestamp)


_LOADED: dict[tuple[str, str], dict[str, Any]] = {}  # (run id, step key) -> what its inputs loaded


def _remember(context: InputContext, key: AssetKey, described: dict[str, Any]) -> None:
    step = _step(context)
    if step is not None:
        _LOADED.setdefault((step.run_id, step.step.key), {})[key.to_user_string()] = described


def _loaded(context: OutputContext) -> dict[str, Any]:
    try:
        step = context.step_context
    except Exception:
        return {}
    return _LOADED.pop((step.run_id, step.step.key), {})
