"""Training building blocks: config validation, special tokens, packing boundaries, overfitting signal."""

import pytest
import torch

from resources.models.base_model import turn_terminator
from resources.training.config import FineTuneConfig
from resources.training.overfitting import overfitting_signal


def test_config_validation_names_every_problem():
    with pytest.raises(ValueError) as err:
        FineTuneConfig(lora_r=0, eval_steps=0, max_steps=0, learning_rate=2)
    message = str(err.value)
    for part in ("lora_r", "eval_steps", "max_steps", "learning_rate"):
        assert part in message
    assert FineTuneConfig(method="full", target_modules=[]).method == "full"  # no adapters needed for full


def test_config_hash_tracks_every_field():
    assert FineTuneConfig().config_hash() == FineTuneConfig().config_hash()
    assert FineTuneConfig().config_hash() != FineTuneConfig(lora_r=8).config_hash()


def test_eos_is_the_token_that_ends_an_assistant_turn(smol_tokenizer):
    # the GGUF declares <|im_start|> as EOS; the chat template closes turns with <|im_end|>
    assert turn_terminator(smol_tokenizer) == "<|im_end|>"
    assert smol_tokenizer.eos_token == "<|im_end|>" and smol_tokenizer.pad_token is not None
    rendered = smol_tokenizer.apply_chat_template(
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], tokenize=False
    )
    assert "a<|im_end|>" in rendered


@pytest.mark.parametrize("attention", ["sdpa", "per_example_sdpa"])
def test_packed_examples_do_not_attend_to_each_other(tiny_model, smol_tokenizer, attention):
    """TRL's packing flattens examples into one row with position ids restarting per example, and passes the
    example boundaries (cu_seq_lens). sdpa: the trainer runs without a KV cache, so transformers builds a
    block-diagonal mask; per_example_sdpa: each example is attended on its own. Either way every example sees
    exactly what it would see alone, in the forward pass and in the gradients."""
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from resources.training.attention import register

    register()
    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation=attention)
    examples = [[11, 12, 13, 14, 15], [21, 22, 23], [31, 32, 33, 34]]
    collator = DataCollatorForLanguageModeling(pad_token_id=smol_tokenizer.pad_token_id, padding_free=True)
    batch = collator([{"input_ids": [t for e in examples for t in e], "seq_lengths": [len(e) for e in examples]}])
    assert batch["cu_seq_lens_q"].tolist() == [0, 5, 8, 12]

    alone = torch.cat([model(input_ids=torch.tensor([e])).logits for e in examples], dim=1)
    model.zero_grad()
    packed = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits
    assert torch.allclose(alone, packed, atol=1e-5)
    # gradients too: a loss on the second example reaches no token of the first
    embeddings = model.get_input_embeddings()(batch["input_ids"]).detach().requires_grad_()
    kwargs = {k: v for k, v in batch.items() if k not in ("labels", "input_ids")}
    model(inputs_embeds=embeddings, use_cache=False, **kwargs).logits[:, 5:8].sum().backward()
    assert embeddings.grad[:, :5].abs().max() == 0 and embeddings.grad[:, 5:8].abs().max() > 0

    leaking = model(input_ids=batch["input_ids"], use_cache=False).logits  # no boundaries: one long sequence
    assert not torch.allclose(alone[:, 5:], leaking[:, 5:], atol=1e-5)


def test_attention_auto_picks_per_example_sdpa_for_packed_training_on_cpu():
    config = FineTuneConfig()
    assert config.resolved_attention(cuda=False) == "per_example_sdpa"
    assert FineTuneConfig(precision="bf16").resolved_attention(cuda=False) == "per_example_sdpa"
    assert config.resolved_attention(cuda=True) == "sdpa"
    assert FineTuneConfig(packing=False).resolved_attention(cuda=False) == "sdpa"
    assert FineTuneConfig(attention="eager").resolved_attention(cuda=False) == "eager"


def test_overfitting_signal():
    healthy = [{"step": 1, "loss": 3.0}, {"step": 2, "eval_loss": 2.9}, {"step": 3, "loss": 2.5}, {"step": 4, "eval_loss": 2.6}]
    assert overfitting_signal(healthy) is None
    overfit = healthy + [{"step": 5, "loss": 1.0}, {"step": 6, "eval_loss": 3.1}, {"step": 7, "loss": 0.5}, {"step": 8, "eval_loss": 3.4}]
    signal = overfitting_signal(overfit)
    assert "rose from 2.6000 (step 4) to 3.4000 (step 8)" in signal
    noisy = healthy + [{"step": 5, "loss": 2.4}, {"step": 6, "eval_loss": 2.61}]
    assert overfitting_signal(noisy) is None  # within tolerance


def test_unknown_model_fails_fast_offline(tmp_path, monkeypatch):
    import time

    from resources.models.base_model import BaseModelSource, ModelUnavailableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    start = time.time()
    with pytest.raises(ModelUnavailableError, match="HF_HUB_OFFLINE"):
        BaseModelSource(model="acme/not-a-cached-model", cache_dir=str(tmp_path)).resolve()
    assert time.time() - start < 30


def test_fine_tuner_launch_commands():
    from resources.training.fine_tuner import FineTuner

    single = FineTuner().command("spec.json")
    assert single[1:] == ["-m", "resources.training.sft_main", "--spec", "spec.json"]
    ddp = FineTuner(launcher="torchrun", num_processes=2)
    assert "--nproc_per_node=2" in ddp.command("spec.json") and ddp.threads() >= 1
    with pytest.raises(ValueError, match="torchrun"):
        FineTuner(num_processes=2)
    sharded = FineTuner(launcher="accelerate", num_processes=8, accelerate_config="config/training/fsdp.yaml")
    assert sharded.command("spec.json")[1:] == [
        "-m", "accelerate.commands.launch", "--config_file", "config/training/fsdp.yaml", "--num_processes", "8",
        "-m", "resources.training.sft_main", "--spec", "spec.json"]
    with pytest.raises(ValueError, match="accelerate_config is required"):
        FineTuner(launcher="accelerate")


def test_shipped_accelerate_configs_shard_as_their_names_say():
    """accelerate's own loader reads the shipped configs: FSDP with full sharding and a full state dict at save
    (a standard adapter folder comes out), DeepSpeed ZeRO-3 saving 16-bit weights, and one CPU process."""
    from accelerate.commands.config.config_args import load_config_from_file

    from helpers import ROOT

    fsdp = load_config_from_file(str(ROOT / "config" / "training" / "fsdp.yaml"))
    assert fsdp.distributed_type == "FSDP" and not fsdp.use_cpu
    assert fsdp.fsdp_config["fsdp_sharding_strategy"] == "FULL_SHARD"
    assert fsdp.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    zero3 = load_config_from_file(str(ROOT / "config" / "training" / "deepspeed_zero3.yaml"))
    assert zero3.distributed_type == "DEEPSPEED" and zero3.deepspeed_config["zero_stage"] == 3
    assert zero3.deepspeed_config["zero3_save_16bit_model"] is True
    cpu = load_config_from_file(str(ROOT / "config" / "training" / "cpu.yaml"))
    assert cpu.distributed_type == "NO" and cpu.use_cpu and cpu.num_processes == 1


def test_loss_covers_the_answer_and_its_end_of_turn_token_only(tiny_model, tiny_dataset, tmp_path):
    """The trainer's own tokenization: prompt tokens are masked, the answer is trained up to and
    including <|im_end|> (the EOS), so the tuned model learns to stop."""
    from resources.training.config import FineTuneConfig
    from resources.training.sft_main import _datasets, _load, _trainer

    config = FineTuneConfig(packing=False, max_length=128)
    tokenizer, model = _load(str(tiny_model), config, precision="fp32")
    train_ds, eval_ds = _datasets(str(tiny_dataset), config)
    trainer = _trainer(config, model, tokenizer, train_ds, eval_ds, tmp_path, False, lambda *_: None, "fp32")
    row = trainer.train_dataset[0]
    trained = [t for t, label in zip(row["input_ids"], row["labels"]) if label != -100]
    masked = [t for t, label in zip(row["input_ids"], row["labels"]) if label == -100]
    answer = tokenizer(train_ds[0]["completion"][0]["content"], add_special_tokens=False)["input_ids"]
    assert trained[: len(answer)] == answer
    assert tokenizer.eos_token_id in trained
    assert tokenizer.decode(masked).count("Question 0") == 1  # the user's question is context, not target


@pytest.mark.parametrize("packing", [True, False])
def test_cpu_loss_equals_trls_chunked_lm_head_loss(tiny_model, tiny_dataset, tmp_path, packing):
    """On CPU the trainer computes logits only where a label is (packed rows), instead of TRL's chunked LM head
    (faster there): on packed and on padded batches with completion-only labels, both give the same loss and
    the same adapter gradients."""
    from trl import SFTTrainer

    from resources.training.config import FineTuneConfig
    from resources.training.sft_main import _datasets, _load, _trainer

    config = FineTuneConfig(max_length=256, precision="fp32", packing=packing)
    tokenizer, model = _load(str(tiny_model), config, "fp32", config.resolved_attention(cuda=False))
    with torch.no_grad():  # trained-looking adapters, so that lora_A gets gradients too
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
    train_ds, eval_ds = _datasets(str(tiny_dataset), config)
    trainer = _trainer(config, model, tokenizer, train_ds, eval_ds, tmp_path, False, lambda *_: None, "fp32")
    assert type(trainer).__name__ == "CpuSFTTrainer"
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    assert batch["labels"].shape[0] == (1 if packing else 3)  # packed rows are flattened into one
    assert (batch["labels"] == -100).any() and (batch["labels"] != -100).any()
    tokens = int((batch["labels"][:, 1:] != -100).sum())

    results = []
    for compute_loss in (trainer.compute_loss, lambda m, b, **kw: SFTTrainer.compute_loss(trainer, m, b, **kw)):
        model.zero_grad()
        loss = compute_loss(model, dict(batch), num_items_in_batch=tokens)
        loss.backward()
        results.append((loss.item(), [p.grad.clone() for p in model.parameters() if p.requires_grad]))
    (ours, ours_grads), (trl, trl_grads) = results
    assert ours == pytest.approx(trl, rel=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(ours_grads, trl_grads))
    if not packing:
        return
    _, outputs = trainer.compute_loss(model, dict(batch), return_outputs=True)
    assert outputs.logits.shape[1] == tokens < batch["input_ids"].shape[1]  # prompt positions get no logits

    unlabelled = {**batch, "labels": torch.full_like(batch["labels"], -100)}  # a micro-batch of prompts only
    model.zero_grad()
    loss = trainer.compute_loss(model, unlabelled, num_items_in_batch=0)  # a whole window without labels
    loss.backward()
    assert loss.item() == 0 and all(not p.grad.any() for p in model.parameters() if p.requires_grad)


def test_per_example_attention_leaves_what_it_does_not_cover_to_sdpa(tiny_model, monkeypatch):
    """Sliding-window layers (the window passed as Mistral/Phi-3 pass it) get transformers' sdpa, which applies
    the window; a model without SDPA support under attention=auto loads with transformers' own choice."""
    from transformers import LlamaForCausalLM
    from transformers.integrations import sdpa_attention

    from resources.training import attention
    from resources.training.sft_main import _load

    calls = []
    monkeypatch.setattr(sdpa_attention, "sdpa_attention_forward", lambda *a, **kw: calls.append(kw) or ("sdpa", None))
    module = torch.nn.Module()
    q, kv = torch.zeros(1, 4, 6, 8), torch.zeros(1, 2, 6, 8)
    cu = torch.tensor([0, 2, 6], dtype=torch.int32)
    assert attention.per_example_sdpa(module, q, kv, kv, None, cu_seq_lens_q=cu, sliding_window=4)[0] == "sdpa"
    assert calls and calls[0]["sliding_window"] == 4
    out, _ = attention.per_example_sdpa(module, q, kv, kv, None, cu_seq_lens_q=cu)
    assert out.shape == (1, 6, 4, 8) and len(calls) == 1  # covered: split per example, no fallback

    monkeypatch.setattr(LlamaForCausalLM, "_supports_sdpa", False)
    _, model = _load(str(tiny_model), FineTuneConfig(precision="fp32"), "fp32", "per_example_sdpa")
    assert model.get_base_model().config._attn_implementation == "eager"
    with pytest.raises(ValueError, match="scaled_dot_product_attention"):  # asked for by name: transformers' error
        _load(str(tiny_model), FineTuneConfig(precision="fp32", attention="per_example_sdpa"), "fp32", "per_example_sdpa")


def test_bf16_precision_keeps_adapters_fp32_on_a_bf16_base(tiny_model, monkeypatch):
    """precision=bf16: the frozen base is held in bf16, the trained LoRA weights stay fp32; auto follows
    the CPU's bf16 flags; a full fine-tune keeps fp32 master weights."""
    import resources.training.config as config_module
    from resources.training.sft_main import _load

    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(config_module, "cpu_has_native_bf16", lambda native=native: native)
        assert FineTuneConfig().resolved_precision(cuda=False) == expected
    assert FineTuneConfig(precision="fp32").resolved_precision(cuda=False) == "fp32"

    _, model = _load(str(tiny_model), FineTuneConfig(precision="bf16"), "bf16")
    trained = {p.dtype for p in model.parameters() if p.requires_grad}
    frozen = {p.dtype for n, p in model.named_parameters() if not p.requires_grad and "proj" in n}
    assert trained == {torch.float32} and frozen == {torch.bfloat16}
    # under autocast the adapters take the bf16 activations as they are (no fp32 round trip) ...
    layers = [m for m in model.modules() if hasattr(m, "cast_input_dtype_enabled")]
    assert layers and not any(m.cast_input_dtype_enabled for m in layers)
    ids = torch.tensor([[11, 12, 13, 14]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()  # ... and their fp32 weights still get fp32 gradients
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    _, full = _load(str(tiny_model), FineTuneConfig(method="full", precision="bf16", learning_rate=2e-5), "bf16")
    assert {p.dtype for p in full.parameters()} == {torch.float32}


def test_per_example_attention_runs_half_precision_in_fp32_on_cpu():
    """Under bf16 autocast the per-example kernel attends in fp32 (the CPU flash kernel's bf16 backward is slower
    and less exact) and hands back bf16; in fp32 it leaves autocast off."""
    import torch.nn.functional as F

    from resources.training.attention import per_example_sdpa

    torch.manual_seed(0)
    module = torch.nn.Module()
    q, k, v = (torch.randn(1, h, 7, 8).to(torch.bfloat16) for h in (4, 2, 2))
    bounds = torch.tensor([0, 3, 7])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = per_example_sdpa(module, q, k, v, None, cu_seq_lens_q=bounds)
    expected = torch.cat([F.scaled_dot_product_attention(a.float(), b.float(), c.float(), is_causal=True, enable_gqa=True)
                          for a, b, c in zip(q.split([3, 4], 2), k.split([3, 4], 2), v.split([3, 4], 2))], 2)
    assert out.dtype == torch.bfloat16 and torch.equal(out, expected.to(torch.bfloat16).transpose(1, 2))
    out32, _ = per_example_sdpa(module, q.float(), k.float(), v.float(), None, cu_seq_lens_q=bounds)
    assert out32.dtype == torch.float32 and torch.equal(out32, expected.transpose(1, 2))


def test_gpu_only_options_name_the_missing_package_on_a_gpu_node(monkeypatch):
    """On a CUDA node without bitsandbytes (qlora) or flash-attn (flash_attention_2) the run fails at once,
    naming the package and how to install it; here the packages are hidden from the import system."""
    import importlib.util

    from resources.training.sft_main import _check_requirements

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("bitsandbytes", "flash_attn") else real(name, *a))
    with pytest.raises(RuntimeError, match=r"bitsandbytes package.*tuneforge\[gpu\]"):
        _check_requirements(FineTuneConfig(method="qlora"), cuda=True)
    with pytest.raises(RuntimeError, match="flash-attn package"):
        _check_requirements(FineTuneConfig(attention="flash_attention_2"), cuda=True)
    _check_requirements(FineTuneConfig(), cuda=True)  # lora with auto attention needs neither


def test_qlora_gradients_equal_those_over_the_dequantized_base_after_an_evaluation(tiny_quantizable_model):
    """The qlora model (4-bit NF4 base, bitsandbytes' CPU backend) trains the same adapters as the same model over
    the dequantized weights in fp32, also after an evaluation pass -- bitsandbytes repacks CPU weights for an
    inference kernel without a backward pass the first time a layer runs in eval mode, which tuneforge turns off."""
    import bitsandbytes as bnb
    from bitsandbytes.functional import dequantize_4bit
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from resources.training.sft_main import _load

    config = FineTuneConfig(method="qlora", precision="fp32", attention="sdpa")
    _, model = _load(str(tiny_quantizable_model), config, "fp32", "sdpa")
    ids = torch.tensor([[1, 42, 99, 7, 300, 12, 5, 77]])
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)  # what Trainer.evaluate does before training
    model.train()
    torch.manual_seed(1)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # non-zero, so that every adapter matrix gets a gradient
            param.data.normal_(0, 0.05)

    reference = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_quantizable_model), config.lora_config())
    reference_modules = dict(reference.named_modules())
    quantized = 0
    for name, module in model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            reference_modules[name].weight.data = dequantize_4bit(module.weight.data, module.weight.quant_state).float()
            quantized += 1
    assert quantized == 14
    reference.load_state_dict({n: p for n, p in model.state_dict().items() if "lora_" in n}, strict=False)

    grads = []
    for net in (model, reference):
        net(input_ids=ids, labels=ids).loss.backward()
        grads.append({n: p.grad for n, p in net.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == 2 * 14
    for name, grad in grads[0].items():
        assert torch.allclose(grad, grads[1][name], rtol=1e-3, atol=1e-6), name


def test_any_model_folder_trains_with_the_turn_terminator_as_eos(tmp_path, tiny_model):
    """A local or hub model whose tokenizer names another EOS than the token its chat template ends a turn with
    (as the SmolLM2 GGUF does) is fixed the same way as the embedded model: in training and in its record."""
    import shutil

    from transformers import AutoTokenizer

    from resources.models.base_model import _describe
    from resources.training.sft_main import _load

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    raw = AutoTokenizer.from_pretrained(folder)
    raw.eos_token = "<|im_start|>"
    raw.save_pretrained(folder)
    assert AutoTokenizer.from_pretrained(folder).eos_token == "<|im_start|>"

    tokenizer, _ = _load(str(folder), FineTuneConfig(precision="fp32"), "fp32")
    assert tokenizer.eos_token == "<|im_end|>"
    assert _describe(str(folder), folder).eos_token == "<|im_end|>"


def test_the_trainer_pieces_are_module_level_and_work_on_their_own(tiny_model, tiny_dataset, tmp_path):
    """`CpuSFTTrainer`, `ProgressCallback` and `training_args` are importable units: built here without the training
    process, the CPU trainer computes a finite loss on a real batch and the callback reports the step it is told."""
    from types import SimpleNamespace

    from resources.training.config import FineTuneConfig
    from resources.training.sft_main import _datasets, _load
    from resources.training.trainer import CpuSFTTrainer, ProgressCallback, training_args

    config = FineTuneConfig(max_length=128, precision="fp32", max_steps=3, eval_steps=2)
    args = training_args(config, tmp_path, cuda=False, precision="fp32", has_eval=True)
    assert args.max_steps == 3 and args.eval_steps == 2 and args.load_best_model_at_end and args.use_cpu
    assert args.completion_only_loss and not args.bf16

    tokenizer, model = _load(str(tiny_model), config, "fp32", config.resolved_attention(cuda=False))
    train_ds, eval_ds = _datasets(str(tiny_dataset), config)
    lines = []
    trainer = CpuSFTTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tokenizer,
                            callbacks=[ProgressCallback(lines.append)])
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    tokens = int((batch["labels"][:, 1:] != -100).sum())
    loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=tokens)
    assert torch.isfinite(loss) and loss.item() > 0

    state = SimpleNamespace(is_world_process_zero=True, global_step=2, max_steps=3, epoch=0.5)
    ProgressCallback(lines.append).on_log(args, state, None, logs={"loss": 3.14159, "learning_rate": 1e-4})
    assert lines[-1] == "step 2/3 epoch=0.5 loss=3.14159 learning_rate=0.0001"
    ProgressCallback(lines.append).on_log(args, SimpleNamespace(**{**vars(state), "is_world_process_zero": False}), None,
                                          logs={"loss": 1.0})
    assert len(lines) == 1  # other ranks stay quiet


def test_the_final_validation_loss_is_not_evaluated_twice():
    """The loss training ended with: the best checkpoint's when it was loaded at the end, the last step's when
    that step was evaluated; only otherwise one more evaluation (each costs a pass over the validation split)."""
    from types import SimpleNamespace

    from resources.training.sft_main import _final_eval_loss

    calls = []

    def trainer(best: bool, best_metric, history, step):
        return SimpleNamespace(args=SimpleNamespace(load_best_model_at_end=best),
                               state=SimpleNamespace(best_metric=best_metric, log_history=history, global_step=step),
                               evaluate=lambda: calls.append(1) or {"eval_loss": 9.0})

    history = [{"step": 10, "eval_loss": 2.5}, {"step": 12, "loss": 2.4}, {"step": 12, "eval_loss": 2.7}]
    assert _final_eval_loss(trainer(True, 2.5, history, 12)) == 2.5 and not calls
    assert _final_eval_loss(trainer(False, None, history, 12)) == 2.7 and not calls
    assert _final_eval_loss(trainer(False, None, history[:2], 12)) == 9.0 and calls == [1]


def test_serving_and_training_pick_bfloat16_from_the_same_host_flags(monkeypatch):
    """vLLM's dtype and training's precision follow the same reading of the host: bfloat16 only where it is
    native (a GPU, AMX-BF16 or AVX512-BF16), float32 where it would be emulated."""
    import resources.host as host_module
    from resources.serving.vllm_server import VllmServer, serving_dtype
    from resources.training.config import FineTuneConfig

    assert serving_dtype(cuda=True, native_bf16=False) == "bfloat16"
    assert serving_dtype(cuda=False, native_bf16=True) == "bfloat16"
    assert serving_dtype(cuda=False, native_bf16=False) == "float32"
    for flags, expected in ((frozenset({"avx2", "fma"}), "float32"), (frozenset({"avx512f", "avx512_bf16"}), "bfloat16"),
                            (frozenset({"amx_bf16", "amx_tile"}), "bfloat16")):
        monkeypatch.setattr(host_module, "cpu_flags", lambda flags=flags: flags)
        monkeypatch.setattr(host_module, "cuda_available", lambda: False)
        server = VllmServer(dtype="auto", port=9)
        assert server.resolved_dtype() == expected
        assert server.command("/models/base", "base")[server.command("/models/base", "base").index("--dtype") + 1] == expected
        assert FineTuneConfig().resolved_precision(cuda=False) == {"float32": "fp32", "bfloat16": "bf16"}[expected]
    assert VllmServer(dtype="float32", port=9).resolved_dtype() == "float32"  # an explicit dtype is kept


def test_the_trainer_process_says_nothing_about_a_kernel_download_it_must_not_make():
    """bitsandbytes' CPU backend (on CPUs with AVX512-BF16) tries to fetch a kernel from the hub and warns, at import,
    when it cannot; the trainer process and the CLI quiet that warning (its own kernel serves, offline)."""
    import subprocess
    import sys

    code = ("from resources.offline import apply_offline_defaults\napply_offline_defaults()\n"
            "import peft, bitsandbytes.backends.cpu.ops\nprint('imported')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "imported" in done.stdout, done.stderr[-2000:]
    assert "kernels-community" not in done.stderr
