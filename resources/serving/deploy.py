"""Put an adapter into service: vLLM (multi-LoRA, loaded at run time) behind the guardrail gateway.

Plain Python over `VllmServer` and `GatewayServer`; each model's `deployed_endpoint` asset calls `deploy`.
Models on the same base model share one vLLM (each adapter a LoRA on it); a model on another base gets a vLLM
of its own (`VllmServer.for_base`); every model is reached through the one gateway under its own name.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from resources.knowledge.prompt import grounded_messages
from resources.redaction.redactor import PiiRedactor
from resources.requestlog import RequestLogSource
from resources.retrieval.index import KnowledgeIndexer
from resources.serving.gateway_server import GatewayServer
from resources.serving.vllm_server import ServingError, VllmServer

BASE_ALIAS = "base"
# What the template check renders on both sides: the grounded prompt as the gateway builds it (a client system
# message, the numbered passages, the question), so a template that drops or merges system turns is caught.
TEMPLATE_PROBE = grounded_messages(
    [{"role": "system", "content": "You are a support assistant."}, {"role": "user", "content": "How long do API tokens last?"}],
    [{"title": "Security", "section": "API tokens", "text": "API tokens expire after 90 days."}])


def served_name(model: str, adapter_version: str) -> str:
    """The name an adapter version of `model` has inside vLLM (evaluation and deployment load it under it)."""
    return f"{model}-{adapter_version[:12]}"


@dataclass(frozen=True)
class ServingStack:
    """What serving needs of the project's resources."""

    vllm: VllmServer
    gateway: GatewayServer
    redactor: PiiRedactor
    indexer: KnowledgeIndexer
    request_log: RequestLogSource


def endpoint_curl(gateway_url: str, model: str, question: str) -> str:
    """A curl that works when pasted into a shell where TUNEFORGE_API_KEY is set (the header is in double quotes,
    so the shell expands the key; the JSON body is in single quotes)."""
    body = json.dumps({"model": model, "temperature": 0, "messages": [{"role": "user", "content": question}]})
    return (f"curl -s {gateway_url}/v1/chat/completions -H \"Authorization: Bearer $TUNEFORGE_API_KEY\" "
            f"-H 'Content-Type: application/json' -d '{body.replace(chr(39), chr(39) + chr(92) + chr(39) + chr(39))}'")


@dataclass
class Deployment:
    name: str  # the alias clients call
    served_model: str  # the adapter's name inside vLLM
    adapter_version: str
    adapter_path: str
    base_model_path: str
    gateway_url: str
    vllm_url: str
    deployed_at: str
    previous_version: str | None

    def to_dict(self) -> dict:
        return asdict(self)


def check_template_and_eos(vllm: VllmServer, adapter_path: str, base_model_path: str, served_name: str = BASE_ALIAS) -> dict:
    """Serving must render prompts exactly as training did, and stop on the same EOS: compare the
    adapter's tokenizer (saved at training) with what the server tokenizes, and the EOS it stops on."""
    from transformers import AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(adapter_path)
    local = tokenizer.apply_chat_template(TEMPLATE_PROBE, tokenize=True, add_generation_prompt=True)
    local = list(local["input_ids"] if isinstance(local, dict) or hasattr(local, "keys") else local)
    served = vllm.chat_template_ids(served_name, TEMPLATE_PROBE)
    if served != local:
        raise ServingError(f"chat template mismatch: vLLM renders {len(served)} tokens, training rendered {len(local)} "
                           f"for the same messages; serve the adapter's tokenizer/template ({adapter_path})")
    generation = GenerationConfig.from_pretrained(base_model_path)
    stops = generation.eos_token_id if isinstance(generation.eos_token_id, list) else [generation.eos_token_id]
    if tokenizer.eos_token_id not in stops:
        raise ServingError(f"EOS mismatch: the adapter was trained to end turns with {tokenizer.eos_token!r} "
                           f"(id {tokenizer.eos_token_id}) but the served model stops on ids {stops}")
    return {"template_tokens": len(local), "eos_token": tokenizer.eos_token}


def deploy(stack: ServingStack, name: str, adapter_version: str, adapter_path: str, base_model_path: str, log=print,
           merged_path: str | None = None, merged_port: int | None = None, route_extra: dict | None = None,
           merged_server: dict | None = None) -> Deployment:
    """Serve `adapter_path` as `name` (no vLLM restart); the previous version stays loaded for rollback.
    With `merged_path`, serve the adapter merged into the base instead, on its own vLLM at `merged_port`
    (no LoRA kernels: faster on CPU, at the cost of one server per merged model), with `merged_server`'s
    VllmServer settings (its cores: `cpu_bind`, `threads`). `route_extra` goes into the
    model's gateway route (its knowledge index, canaries and redaction policy)."""
    if not merged_path and not (Path(adapter_path) / "adapter_config.json").exists():
        raise ServingError(f"{adapter_path} is not a PEFT adapter folder (no adapter_config.json); a full fine-tune "
                           "is served as its merged_model (serving.serve_merged)")
    gateway = stack.gateway
    vllm = stack.vllm.for_base(base_model_path)
    vllm_url = vllm.ensure_running(base_model_path, served_name=BASE_ALIAS)
    log(f"vLLM serving {base_model_path} at {vllm_url}")
    check = check_template_and_eos(vllm, adapter_path, base_model_path)
    log(f"chat template and EOS match ({check})")
    served_model = served_name(name, adapter_version)
    route = {"upstream": served_model, "adapter_version": adapter_version, "adapter_path": str(adapter_path),
             "url": vllm_url, **(route_extra or {})}
    if merged_path:
        if not (Path(merged_path) / "config.json").exists():
            raise ServingError(f"{merged_path} is not a model folder: materialize merged_model for {adapter_version} first")
        server = vllm.model_copy(update={"port": merged_port or vllm.port + 1, "url": None, **(merged_server or {})})
        server.ensure_serving(merged_path, served_model)
        check_template_and_eos(server, adapter_path, merged_path, served_model)
        route |= {"url": server.base_url, "merged": True}
        log(f"merged model {merged_path} served by its own vLLM at {server.base_url}")
    else:
        vllm.load_adapter(served_model, adapter_path)
    routes = gateway.routes()
    previous = routes.get(name, {}).get("adapter_version")
    if vllm.port == stack.vllm.port:  # the base model of the default vLLM is reachable as `base`, for comparison
        routes[BASE_ALIAS] = {"upstream": BASE_ALIAS, "adapter_version": None, "url": vllm_url}
    routes[name] = route
    gateway.write_routes(routes)
    gateway_url = gateway.ensure_running(stack.vllm, stack.redactor, stack.indexer, stack.request_log)
    log(f"gateway at {gateway_url} routes {name!r} -> {served_model} (previously {previous or 'nothing'})")
    return Deployment(name, served_model, adapter_version, str(adapter_path), base_model_path, gateway_url, vllm_url,
                      dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), previous)
