"""Deployment: the promoted adapter in service on vLLM, behind the guardrail gateway."""

from dagster import (
    AssetExecutionContext,
    Backoff,
    Config,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    RetryPolicy,
    asset,
)
from pydantic import Field

from assets.evaluation import CHAMPION, champion_version, safety_report
from assets.training import base_model, lora_adapter
from resources.serving.deploy import deploy
from resources.serving.gateway_server import GatewayServer
from resources.serving.vllm_server import VllmServer
from resources.storage import ArtifactNotFoundError, ArtifactStore, write_json


class DeploymentConfig(Config):
    name: str = Field(default="support", description="Model name clients call through the gateway (one per team's adapter).")
    adapter_version: str | None = Field(
        default=None, description="Adapter version to serve; unset: the latest. Set it to a previous version to roll back."
    )
    serve_merged: bool = Field(
        default=False, description="Serve the adapter merged into the base (merged_model) on its own vLLM instead of as "
        "a LoRA on the shared one: faster on CPU (see the serving benchmark), one server per merged model.",
    )
    merged_port: int = Field(default=8001, description="Port of the vLLM serving the merged model (serve_merged).")


def gate_decision(store: ArtifactStore, version: str) -> dict:
    try:
        return store.read_json("promotion_gate", version, "decision.json")
    except (ArtifactNotFoundError, FileNotFoundError):
        return {"promote": False, "reasons": [f"adapter {version} has not been through the promotion gate"]}


@asset(
    deps=[safety_report, lora_adapter, base_model],
    group_name="deployment",
    kinds={"vllm", "fastapi"},
    code_version="1",
    # vLLM start-up or an adapter load can fail transiently (port still held, a slow disk): retry with backoff
    retry_policy=RetryPolicy(max_retries=2, delay=10, backoff=Backoff.EXPONENTIAL),
)
def deployed_endpoint(context: AssetExecutionContext, config: DeploymentConfig, vllm: VllmServer,
                      gateway: GatewayServer, store: ArtifactStore) -> MaterializeResult:
    """The adapter the promotion gate passed, served by vLLM next to the other teams' adapters and reached
    through the guardrail gateway's OpenAI-compatible API; it becomes the champion."""
    version = config.adapter_version or store.latest("lora_adapter")
    if config.adapter_version and config.adapter_version not in store.partitions("lora_adapter"):
        raise Failure(f"DeploymentConfig.adapter_version = {config.adapter_version!r}: no such lora_adapter version "
                      f"(stored: {', '.join(store.partitions('lora_adapter')) or 'none'})", allow_retries=False)
    decision = gate_decision(store, version)
    if not decision["promote"]:
        raise Failure(f"adapter {version} may not be deployed: the promotion gate did not pass it",
                      metadata={"reasons": MetadataValue.md("\n".join(f"- {r}" for r in decision["reasons"]))},
                      allow_retries=False)
    base_path = store.read_json("base_model", store.latest("base_model"), "model.json")["path"]
    adapter_path = str(store.local("lora_adapter", version))
    before = champion_version(store)
    merged = str(store.local("merged_model", version)) if config.serve_merged else None
    deployment = deploy(vllm, gateway, config.name, version, adapter_path, base_path, log=context.log.info,
                        merged_path=merged, merged_port=config.merged_port)
    with store.writing("deployed_endpoint", version) as out:
        write_json(out, "endpoint.json", {**deployment.__dict__, "previous_champion": before})
    store.set_latest("deployed_endpoint", version)
    store.set_latest(CHAMPION, version)
    curl = (f"curl -s {deployment.gateway_url}/v1/chat/completions -H 'Authorization: Bearer $TUNEFORGE_API_KEY' "
            f"-H 'Content-Type: application/json' -d '{{\"model\": \"{config.name}\", \"temperature\": 0, \"messages\": "
            f"[{{\"role\": \"user\", \"content\": \"How long do API tokens last?\"}}]}}'")
    return MaterializeResult(
        metadata={
            "url": MetadataValue.url(deployment.gateway_url + "/v1"),
            "served_model": MetadataValue.text(config.name),
            "vllm_model": MetadataValue.text(deployment.served_model),
            "adapter_version": MetadataValue.text(version),
            "previous_champion": MetadataValue.text(before or "none"),
            "deployed_at": MetadataValue.text(deployment.deployed_at),
            "vllm_url": MetadataValue.url(deployment.vllm_url),
            "served_as": MetadataValue.text("merged model on its own vLLM" if merged else "LoRA adapter on the shared vLLM"),
            "gate": MetadataValue.md("\n".join(f"- {r}" for r in decision["reasons"])),
            "curl": MetadataValue.md(f"```\n{curl}\n```"),
        },
        data_version=DataVersion(version),
    )
