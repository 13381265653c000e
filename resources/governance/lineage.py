"""The lineage audit: from a deployed endpoint (or an adapter) back to the raw files, read from the Dagster
instance's own event log — materializations, their metadata, data versions, the input data versions
Dagster records on each materialization, asset-check evaluations and run tags — not from a side database.

Chain: endpoint -> adapter (config hash, manifest, code version) -> instruction dataset version ->
redacted / cleaned / raw partitions (redaction policy, audit counts, files with sha256 and ingestion time)
-> base model (id, weights sha256) -> evaluation scores and the promotion-gate decision; with the run
and trigger (sensor, schedule, launched by hand) of every step.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from dagster import AssetCheckKey, AssetKey, AssetRecordsFilter, DagsterInstance


class LineageError(LookupError):
    """The thing asked about is not in the instance's event log."""


def _value(v: Any) -> Any:
    value = getattr(v, "value", v)
    if hasattr(value, "md_str"):
        return value.md_str
    if hasattr(value, "path"):
        return value.path
    if hasattr(value, "url"):
        return value.url
    return value


class LineageReader:
    def __init__(self, instance: DagsterInstance):
        self.instance = instance

    # -- event log lookups ---------------------------------------------------------------------
    def _records(self, asset: str, partition: str | None = None, limit: int = 100, before: float | None = None):
        flt = AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[partition] if partition else None,
                                 before_timestamp=before)
        return self.instance.fetch_materializations(flt, limit=limit).records

    def _by_storage_id(self, asset: str, storage_id: int):
        records = self._records_filtered(AssetRecordsFilter(asset_key=AssetKey(asset), storage_ids=[storage_id]))
        return records[0] if records else None

    def _records_filtered(self, flt):
        return self.instance.fetch_materializations(flt, limit=1).records

    def _by_data_version(self, asset: str, version: str):
        for record in self._records(asset):
            if record.event_log_entry.asset_materialization.tags.get("dagster/data_version") == version:
                return record
        return None

    def _trigger(self, run_id: str) -> dict:
        run = self.instance.get_run_by_id(run_id)
        tags = run.tags if run else {}
        if "dagster/sensor_name" in tags:
            how = f"sensor {tags['dagster/sensor_name']}" + (f" (run key {tags['dagster/run_key']})" if "dagster/run_key" in tags else "")
        elif "dagster/schedule_name" in tags:
            how = f"schedule {tags['dagster/schedule_name']}"
        elif tags.get("dagster/from_automation_condition") or "dagster/automation_condition_evaluation_id" in tags:
            how = "automation condition"
        else:
            how = "launched by " + tags.get("dagster/user", tags.get("user", "hand (UI, CLI or API)"))
        return {"run_id": run_id, "job": run.job_name if run else None, "triggered_by": how}

    def _node(self, asset: str, record) -> dict:
        m = record.event_log_entry.asset_materialization
        return {
            "asset": asset, "partition": m.partition,
            "data_version": m.tags.get("dagster/data_version"), "code_version": m.tags.get("dagster/code_version"),
            "materialized_at": dt.datetime.fromtimestamp(record.timestamp, dt.timezone.utc).isoformat(timespec="seconds"),
            "storage_id": record.storage_id, **self._trigger(record.run_id),
            "metadata": {k: _value(v) for k, v in m.metadata.items()},
            "inputs": {k.split("/")[-1]: v for k, v in m.tags.items() if k.startswith("dagster/input_data_version/")},
            "_pointers": {k.split("/")[-1]: int(v) for k, v in m.tags.items() if k.startswith("dagster/input_event_pointer/")},
        }

    def _upstream(self, node: dict, asset: str) -> dict | None:
        pointer = node["_pointers"].get(asset)
        record = self._by_storage_id(asset, pointer) if pointer else None
        if record is None and asset in node["inputs"]:
            record = self._by_data_version(asset, node["inputs"][asset])
        return self._node(asset, record) if record else None

    def _gate(self, adapter_version: str) -> dict | None:
        key = AssetCheckKey(AssetKey("safety_report"), "promotion_gate")
        history = self.instance.event_log_storage.get_asset_check_execution_history(key, limit=50)
        for record in history:
            event = record.event
            evaluation = event.dagster_event.event_specific_data if event and event.dagster_event else None
            metadata = {k: _value(v) for k, v in (evaluation.metadata or {}).items()} if evaluation else {}
            if metadata.get("adapter_version") == adapter_version:
                return {"passed": evaluation.passed, "decision": metadata.get("decision"), "reasons": metadata.get("reasons"),
                        "evaluated_at": dt.datetime.fromtimestamp(event.timestamp, dt.timezone.utc).isoformat(timespec="seconds"),
                        **self._trigger(record.run_id)}
        return None

    # -- the report ------------------------------------------------------------------------------
    def endpoint(self, name: str) -> dict:
        for record in self._records("deployed_endpoint"):
            node = self._node("deployed_endpoint", record)
            if node["metadata"].get("served_model") == name:
                return node
        raise LineageError(f"no deployed_endpoint materialization serves {name!r} in this Dagster instance")

    def report(self, endpoint: str | None = None, adapter_version: str | None = None) -> dict:
        out: dict[str, Any] = {"generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        if endpoint:
            out["endpoint"] = self.endpoint(endpoint)
            adapter_version = out["endpoint"]["metadata"]["adapter_version"]
        if not adapter_version:
            raise LineageError("name an endpoint or an adapter version")
        record = self._by_data_version("lora_adapter", adapter_version)
        if record is None:
            raise LineageError(f"no lora_adapter materialization with version {adapter_version!r} in this Dagster instance")
        adapter = out["adapter"] = self._node("lora_adapter", record)
        out["base_model"] = self._upstream(adapter, "base_model")
        dataset = out["dataset"] = self._upstream(adapter, "instruction_dataset")
        out["golden_dataset"] = self._upstream(dataset, "golden_dataset") if dataset else None
        out["batches"] = []
        if dataset:
            cutoff = dt.datetime.fromisoformat(dataset["materialized_at"]).timestamp() + 1e-3
            for batch in _batches(dataset) or self.instance.get_dynamic_partitions("ingestion_batches"):
                chain = {"batch": batch}
                for asset in ("redacted_documents", "cleaned_documents", "raw_documents"):
                    records = self._records(asset, batch, limit=1, before=cutoff)
                    chain[asset] = self._node(asset, records[0]) if records else None
                out["batches"].append(chain)
        evals = [self._node("eval_report", r) for r in self._records("eval_report") if
                 r.event_log_entry.asset_materialization.tags.get("dagster/data_version") == adapter_version]
        out["evaluation"] = evals[0] if evals else None
        out["promotion_gate"] = self._gate(adapter_version)
        return _strip(out)


def _batches(dataset: dict) -> list[str]:
    """The ingestion batches (partitions) the dataset version was built from (its `batch_names`)."""
    return list(dataset["metadata"].get("batch_names") or [])


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def source_files(report: dict) -> list[dict]:
    """Every raw file the report reaches: batch, path, sha256, ingestion time."""
    files = []
    for chain in report.get("batches", []):
        raw = chain.get("raw_documents")
        if raw:
            for f in raw["metadata"].get("source_files") or []:
                files.append({"batch": chain["batch"], **f, "ingested_at": raw["materialized_at"]})
    return files


def to_markdown(report: dict) -> str:
    """The report as a governance reviewer reads it."""
    lines = ["# Lineage audit", "", f"Generated {report['generated_at']} from the Dagster event log.", ""]

    def step(title: str, node: dict | None, keys: tuple[str, ...]) -> None:
        lines.append(f"## {title}")
        if not node:
            lines.extend(["not found in the event log", ""])
            return
        lines.append(f"- version `{node['data_version']}`, code version `{node['code_version']}`, materialized "
                     f"{node['materialized_at']}, run `{node['run_id']}` ({node['job']}), triggered by {node['triggered_by']}")
        for key in keys:
            if key in node["metadata"]:
                value = node["metadata"][key]
                lines.append(f"- {key}: {value if not isinstance(value, (dict, list)) else json.dumps(value)}")
        lines.append("")

    if "endpoint" in report:
        step(f"Endpoint `{report['endpoint']['metadata'].get('served_model')}`", report["endpoint"],
             ("url", "adapter_version", "vllm_model", "deployed_at", "previous_champion"))
    step("Adapter", report["adapter"], ("method", "dataset_version", "base_model_sha256", "steps", "final_eval_loss", "base_eval_loss", "path"))
    step("Base model", report["base_model"], ("model_id", "weights_sha256", "parameters", "dtype", "eos_token"))
    step("Instruction dataset", report["dataset"], ("train_examples", "validation_examples", "records_in", "records_kept", "text_strategy", "path"))
    step("Golden dataset", report["golden_dataset"], ("examples", "path"))
    lines.append("## Data batches")
    lines.append("| batch | redacted version | redaction policy | redactions | raw files (sha256) | ingested | trigger |")
    lines.append("|---|---|---|---|---|---|---|")
    for chain in report["batches"]:
        red, raw = chain.get("redacted_documents") or {}, chain.get("raw_documents") or {}
        files = ", ".join(f"{f['path']} ({f['sha256']})" for f in (raw.get("metadata", {}).get("source_files") or []))
        lines.append(f"| {chain['batch']} | {red.get('data_version', '—')} | {red.get('metadata', {}).get('redaction_policy', '—')} "
                     f"| {red.get('metadata', {}).get('redactions_total', '—')} | {files or '—'} | {raw.get('materialized_at', '—')} "
                     f"| {raw.get('triggered_by', '—')} |")
    lines.append("")
    evaluation = report.get("evaluation")
    if evaluation:
        scores = {k: v for k, v in evaluation["metadata"].items() if isinstance(v, float)}
        step("Evaluation", evaluation, ())
        lines.insert(len(lines) - 1, "- scores: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(scores.items())))
    gate = report.get("promotion_gate")
    lines.append("## Promotion gate")
    if gate:
        lines += [f"- decision: **{gate['decision']}** ({gate['evaluated_at']}, run `{gate['run_id']}`)", str(gate["reasons"] or "")]
    else:
        lines.append("no promotion-gate evaluation recorded for this adapter")
    return "\n".join(lines) + "\n"


def to_openlineage(report: dict, namespace: str = "tuneforge") -> list[dict]:
    """The chain as OpenLineage RunEvents (COMPLETE), one per materialization, oldest first."""
    def dataset(node: dict) -> dict:
        name = node["asset"] + (f"/{node['partition']}" if node.get("partition") else "")
        return {"namespace": namespace, "name": name,
                "facets": {"version": {"_producer": "tuneforge", "_schemaURL": "https://openlineage.io/spec/facets/1-0-1/DatasetVersionDatasetFacet.json",
                                       "datasetVersion": node["data_version"]}}}

    chain: list[tuple[dict, list[dict]]] = []
    for batch in report.get("batches", []):
        raw, cleaned, redacted = (batch.get(a) for a in ("raw_documents", "cleaned_documents", "redacted_documents"))
        chain += [(n, [u] if u else []) for n, u in ((raw, None), (cleaned, raw), (redacted, cleaned)) if n]
    dataset_node = report.get("dataset")
    if dataset_node:
        chain.append((dataset_node, [b["redacted_documents"] for b in report.get("batches", []) if b.get("redacted_documents")]))
    adapter = report["adapter"]
    chain.append((adapter, [n for n in (dataset_node, report.get("base_model")) if n]))
    if report.get("endpoint"):
        chain.append((report["endpoint"], [adapter]))
    return [{
        "eventType": "COMPLETE", "eventTime": node["materialized_at"], "producer": "https://github.com/tuneforge/tuneforge",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": {"runId": node["run_id"]}, "job": {"namespace": namespace, "name": node["asset"]},
        "inputs": [dataset(u) for u in inputs], "outputs": [dataset(node)],
    } for node, inputs in sorted(chain, key=lambda item: item[0]["materialized_at"])]
