"""The serving plan: which deployment (runtime LoRA on one vLLM, or a merged vLLM per model) a host gets for N
models on one base model, and `tuneforge serve plan` printing it for a project beside what each model configures."""

import subprocess
import sys

import pytest

from helpers import ROOT


def test_gpu_hosts_serve_every_count_as_runtime_lora():
    from resources.serving.placement import HostResources, choose_deployment

    for n in (1, 2, 4, 8, 64):
        choice = choose_deployment(n, HostResources(cuda=True, cores=16, memory_gib=128))
        assert (choice.mode, choice.servers, choice.max_loras) == ("lora", 1, n) and "GPU" in choice.reason


def test_cpu_hosts_merge_while_the_servers_fit_in_memory_and_on_the_cores():
    from resources.serving.placement import (MAX_ROUTED_PER_CORE, MERGED_SERVER_GIB, RESERVED_GIB, HostResources,
                                             choose_deployment)

    laptop = HostResources(cuda=False, cores=2, memory_gib=24)
    fits = min(int((laptop.memory_gib - RESERVED_GIB) // MERGED_SERVER_GIB) - 1, MAX_ROUTED_PER_CORE * laptop.cores)
    assert fits >= 1
    for n in range(1, fits + 1):
        choice = choose_deployment(n, laptop)
        assert choice.serve_merged and choice.servers == n and choice.max_loras == 0, n
    over = choose_deployment(fits + 1, laptop)
    assert over.mode == "lora" and over.servers == 1
    roomy = HostResources(cuda=False, cores=64, memory_gib=64)  # cores to spare: the memory bound speaks
    in_memory = int((roomy.memory_gib - RESERVED_GIB) // MERGED_SERVER_GIB) - 1
    assert choose_deployment(in_memory, roomy).serve_merged
    assert "GiB" in choose_deployment(in_memory + 1, roomy).reason
    big = HostResources(cuda=False, cores=2, memory_gib=512)  # memory to spare: the cores bound
    assert choose_deployment(2 * MAX_ROUTED_PER_CORE, big).serve_merged
    crowded = choose_deployment(2 * MAX_ROUTED_PER_CORE + 1, big)
    assert crowded.mode == "lora" and "cores" in crowded.reason
    small = HostResources(cuda=False, cores=4, memory_gib=6)  # not even one merged server beside the reserve
    assert choose_deployment(1, small).mode == "lora"
    with pytest.raises(ValueError, match="adapters must be >= 1"):
        choose_deployment(0, laptop)


def test_serve_plan_prints_the_choice_for_each_base_model_of_a_project(tmp_path):
    from resources.serving.placement import HostResources, choose_deployment

    out = subprocess.run([sys.executable, "-m", "orchestration.cli", "serve", "plan", "--project", str(ROOT)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("host: ")
    expected = choose_deployment(2, HostResources.detect())  # the sample project: two models on the embedded model
    [base_line] = [line for line in lines if "model(s) ->" in line]
    assert f"2 model(s) -> {expected.mode}" in base_line
    assert {line.split(":")[0].strip() for line in lines if "configured" in line} == {"support", "policy"}


def test_merged_servers_get_cores_of_their_own():
    from resources.serving.placement import core_slices

    assert core_slices(1, 2) == [("0-1", 2)]
    assert core_slices(2, 2) == [("0", 1), ("1", 1)]
    assert core_slices(2, 8) == [("0-3", 4), ("4-7", 4)]
    assert core_slices(3, 2) == [("0", 1), ("1", 1), ("0", 1)]  # more servers than cores: one core each, in turn
    with pytest.raises(ValueError):
        core_slices(0, 2)


def test_a_models_merged_cpus_are_validated_and_become_its_servers_binding():
    from pydantic import ValidationError

    from resources.serving.placement import cpu_binding
    from resources.spec import ServingOptions

    assert ServingOptions(serve_merged=True, merged_cpus="2-3").merged_cpus == "2-3"
    for bad in ("0;rm -rf /", "all", "1-", ""):
        with pytest.raises(ValidationError, match="merged_cpus"):
            ServingOptions(merged_cpus=bad)
    assert cpu_binding(None) == {}
    assert cpu_binding("0") == {"cpu_bind": "0", "threads": 1}
    assert cpu_binding("2-3,6") == {"cpu_bind": "2-3,6", "threads": 3}


def test_merged_capacity_is_bounded_by_memory_and_cores():
    from resources.serving.placement import (MAX_ROUTED_PER_CORE, MERGED_SERVER_GIB, RESERVED_GIB, HostResources,
                                             merged_capacity)

    by_memory = int((24 - RESERVED_GIB) // MERGED_SERVER_GIB) - 1  # beside the base model's own server
    assert merged_capacity(HostResources(cuda=False, cores=64, memory_gib=24)) == by_memory
    assert merged_capacity(HostResources(cuda=False, cores=1, memory_gib=512)) == MAX_ROUTED_PER_CORE
    assert merged_capacity(HostResources(cuda=False, cores=4, memory_gib=4)) == 0
