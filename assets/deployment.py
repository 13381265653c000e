"""Deployment: a model's promoted adapter in service on vLLM, behind the guardrail gateway, and its champion."""

import datetime as dt

from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetMaterialization,
    AssetRecordsFilter,
    AssetSpec,
    Backoff,
    Config,
    Failure,
    MetadataValue,
    Output,
    RetryPolicy,
    asset,
)
from pydantic import Field

from assets.metadata import asset_args, bullets, emit, key
from resources.artifacts import ARTIFACT_METADATA, OPTIONAL, Artifact, store_name, version_of
from resources.evaluation.gate import GateDecision
from resources.redaction.redactor import PiiRedactor
from resources.requestlog import RequestLogSource
from resources.retrieval.index import KnowledgeIndexer
from resources.serving.deploy import ServingStack, deploy, endpoint_curl
from resources.serving.gateway_server import GatewayServer
from resources.serving.placement import cpu_binding
from resources.serving.vllm_server import VllmServer
from resources.spec import ModelSpec
from resources.storage import ArtifactStore, write_json


class DeploymentConfig(Config):
    adapter_version: str | None = Field(
        default=None, description="Put this earlier adapter version back in service (a rollback): it must have a "
        "promotion decision to promote. Unset: the adapter this run's promotion decision is about.",
    )


def champion_spec(spec: ModelSpec) -> AssetSpec:
    return AssetSpec(
        key=key(spec, "champion"), kinds={"vllm"}, description="The adapter in service for this model: materialized by "
        "deployed_endpoint each time it puts an adapter into service (also a rollback); the evaluation compares each "
        "candidate with it.", **asset_args(spec, "deployment"))


def build(spec: ModelSpec) -> list:
    champion = champion_spec(spec)
    ins = {"promotion_decision": AssetIn(key=key(spec, "promotion_decision")), "lora_adapter": AssetIn(key=key(spec, "lora_adapter")),
           "base_model": AssetIn(key=key(spec, "base_model")), "knowledge_index": AssetIn(key=key(spec, "knowledge_index")),
           # served only with serving.serve_merged (then it must be this adapter's merge)
           "merged_model": AssetIn(key=key(spec, "merged_model"), metadata={OPTIONAL: True})}

    @asset(key=key(spec, "deployed_endpoint"), kinds={"vllm", "fastapi"}, code_version="3", ins=ins,
           # vLLM start-up or an adapter load can fail transiently (port still held, a slow disk): retry with backoff
           retry_policy=RetryPolicy(max_retries=2, delay=10, backoff=Backoff.EXPONENTIAL), **asset_args(spec, "deployment"))
    def deployed_endpoint(context: AssetExecutionContext, config: DeploymentConfig, vllm: VllmServer, gateway: GatewayServer,
                          redactor: PiiRedactor, indexer: KnowledgeIndexer, request_log: RequestLogSource, store: ArtifactStore,
                          promotion_decision: Artifact, lora_adapter: Artifact, base_model: Artifact,
                          knowledge_index: Artifact, merged_model: Artifact | None) -> Output[Artifact]:
        """The adapter the promotion decision passed, served by vLLM next to the other models' adapters (one vLLM
        per base model) and reached through the guardrail gateway's OpenAI-compatible API as the model's name; it
        becomes the model's champion."""
        if config.adapter_version and config.adapter_version != lora_adapter.version:
            adapter, decision_artifact, decision = rollback_target(context, spec, store, config.adapter_version)
        else:
            adapter, decision_artifact = lora_adapter, promotion_decision
            decision = GateDecision.from_dict(promotion_decision.read_json("decision.json"))
        if decision.adapter_version != adapter.version:
            raise Failure(f"the promotion decision {decision_artifact.version} is about adapter {decision.adapter_version}, "
                          f"not {adapter.version}: evaluate this adapter first", allow_retries=False)
        if not decision.promote:
            raise Failure(f"adapter {adapter.version} may not be deployed: its promotion decision is to block",
                          metadata={"reasons": bullets(decision.reasons)}, allow_retries=False)
        stack = ServingStack(vllm, gateway, redactor.for_policy(spec.redaction_policy, spec.public_entities), indexer, request_log)
        # served as it was judged: the retrieval threshold and grounding check the decision records
        judged = {"grounding": spec.serving.grounding, "abstention": spec.knowledge.abstention,
                  "min_retrieval_score": None, **decision.serving}
        route = {"knowledge_index_dir": str(knowledge_index.path), "retrieval": spec.serving.retrieval,
                 "retrieval_passages": spec.serving.retrieval_passages, "canaries_path": spec.safety.canaries,
                 "redaction_policy": spec.redaction_policy, "public_entities": list(spec.public_entities),
                 "toxicity_lexicon_path": spec.safety.toxicity_lexicon, "grounding": judged["grounding"],
                 "abstention": judged["abstention"], "min_retrieval_score": judged["min_retrieval_score"]}
        merged = None
        if spec.serving.serve_merged:
            if merged_model is None or merged_model.read_json_or_none("merged.json", {}).get("adapter_version") != adapter.version:
                raise Failure(f"serving.serve_merged: materialize {spec.name}/merged_model for adapter {adapter.version} first "
                              "(the model's retrain job does)", allow_retries=False)
            merged = str(merged_model.path)
        deployment = deploy(stack, spec.name, adapter.version, str(adapter.path), base_model.read_json("model.json")["path"],
                            log=context.log.info, merged_path=merged, merged_port=spec.serving.merged_port, route_extra=route,
                            merged_server=cpu_binding(spec.serving.merged_cpus))
        content = {**deployment.to_dict(), "decision": decision_artifact.key, "knowledge_index": knowledge_index.key}
        version = version_of({k: v for k, v in content.items() if k != "deployed_at"},
                             {"promotion_decision": decision_artifact.version, "lora_adapter": adapter.version,
                              "base_model": base_model.version, "knowledge_index": knowledge_index.version},
                             spec.serving.model_dump())
        artifact = Artifact.create(store, context.asset_key, version)
        with artifact.writing() as out:
            write_json(out, "endpoint.json", content)
        report_champion(context, spec, store, adapter, artifact, deployment.deployed_at)
        curl = endpoint_curl(deployment.gateway_url, spec.name, spec.serving.example_question)
        return emit(artifact, {
            "url": MetadataValue.url(deployment.gateway_url + "/v1"),
            "served_model": MetadataValue.text(spec.name),
            "vllm_model": MetadataValue.text(deployment.served_model),
            "adapter_version": MetadataValue.text(adapter.version),
            "previous_champion": MetadataValue.text(deployment.previous_version or "none"),
            "rollback": MetadataValue.bool(adapter is not lora_adapter),
            "deployed_at": MetadataValue.text(deployment.deployed_at),
            "vllm_url": MetadataValue.url(deployment.vllm_url),
            "served_as": MetadataValue.text("merged model on its own vLLM" if merged else "LoRA adapter on the shared vLLM"),
            "gate": bullets(decision.reasons),
            "grounding": MetadataValue.json({k: route[k] for k in ("grounding", "min_retrieval_score", "abstention")}),
            "curl": MetadataValue.md(f"```\n{curl}\n```"),
        })

    return [champion, deployed_endpoint]


def rollback_target(context: AssetExecutionContext, spec: ModelSpec, store: ArtifactStore,
                    adapter_version: str) -> tuple[Artifact, Artifact, GateDecision]:
    """The adapter named by DeploymentConfig.adapter_version and the recorded decision that promoted it."""
    adapter_key = key(spec, "lora_adapter")
    adapters = {r.event_log_entry.asset_materialization.tags.get("dagster/data_version"): r for r in
                context.instance.fetch_materializations(AssetRecordsFilter(asset_key=adapter_key), limit=500).records}
    if adapter_version not in adapters:
        known = ", ".join(v for v in adapters if v) or "none"
        raise Failure(f"DeploymentConfig.adapter_version = {adapter_version!r}: no such {adapter_key.to_user_string()} "
                      f"version (materialized: {known})", allow_retries=False)
    record = adapters[adapter_version]
    adapter = Artifact(store_name(adapter_key), str(record.event_log_entry.asset_materialization.metadata[ARTIFACT_METADATA].value),
                       adapter_version, storage_id=record.storage_id, run_id=record.run_id, store=store)
    decision_key = key(spec, "promotion_decision")
    for found in context.instance.fetch_materializations(AssetRecordsFilter(asset_key=decision_key), limit=500).records:
        materialization = found.event_log_entry.asset_materialization
        if materialization.metadata.get("adapter_version") and materialization.metadata["adapter_version"].value == adapter_version:
            decision_artifact = Artifact(store_name(decision_key), str(materialization.metadata[ARTIFACT_METADATA].value),
                                         materialization.tags.get("dagster/data_version", ""), storage_id=found.storage_id,
                                         run_id=found.run_id, store=store)
            context.log.info(f"rolling back to {adapter_version}: promotion decision {found.storage_id} (run {found.run_id})")
            return adapter, decision_artifact, GateDecision.from_dict(decision_artifact.read_json("decision.json"))
    raise Failure(f"adapter {adapter_version} has no recorded promotion decision: evaluate it first", allow_retries=False)


def report_champion(context: AssetExecutionContext, spec: ModelSpec, store: ArtifactStore, adapter: Artifact,
                    endpoint: Artifact, deployed_at: str) -> None:
    """Record the model's champion: the adapter now in service (an artifact and a materialization of `champion`)."""
    champion_key = key(spec, "champion")
    version = version_of(adapter.version, {"deployed_endpoint": endpoint.version})
    artifact = Artifact.create(store, champion_key, version)
    with artifact.writing() as out:
        write_json(out, "champion.json", {"adapter_version": adapter.version, "adapter_key": adapter.key,
                                          "deployed_endpoint": endpoint.key, "deployed_at": deployed_at,
                                          "recorded_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
    context.log_event(AssetMaterialization(
        asset_key=AssetKey(champion_key.path),
        metadata={ARTIFACT_METADATA: MetadataValue.text(artifact.key), "adapter_version": MetadataValue.text(adapter.version),
                  "deployed_endpoint": MetadataValue.text(endpoint.version),
                  "path": MetadataValue.path(str(store.partition_dir(artifact.asset, artifact.key)))},
        tags={"dagster/data_version": version}))
