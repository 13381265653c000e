"""`FineTuner`: launches the training process through Dagster Pipes.

The trainer never runs inside the Dagster process: it is its own process (or group of processes),
started by a Pipes client. Locally that is `PipesSubprocessClient` running `python -m
resources.training.sft_main`, or `torchrun --standalone --nproc_per_node N` for data-parallel
training on CPU (gloo) or GPUs (nccl). On a cluster, `pipes_client()` is the one thing to swap (e.g.
`dagster_k8s.PipesK8sClient` with a GPU pod spec); the trainer script is the same.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Literal

from dagster import ConfigurableResource, PipesSubprocessClient
from pydantic import Field, model_validator

MODULE = "resources.training.sft_main"


class FineTuner(ConfigurableResource):
    """How (and on how many processes) fine-tuning runs."""

    launcher: Literal["python", "torchrun"] = Field(
        default="python",
        description="python: one process; torchrun: `torchrun --standalone --nproc_per_node num_processes` "
        "(DDP; gloo on CPU, nccl on GPUs). Note `accelerate launch --cpu --num_processes N` was seen to start "
        "one process only, hence torchrun.",
    )
    num_processes: int = Field(default=1, description="Processes (ranks) for the torchrun launcher.")
    threads_per_process: int | None = Field(
        default=None, description="torch threads per process; default: CPU cores divided by num_processes."
    )
    work_dir: str = Field(
        default=".tuneforge/training",
        description="Checkpoints of runs in progress, one folder per adapter version; a killed run resumes "
        "from its last checkpoint when materialized again.",
    )
    extra_env: dict[str, str] = Field(default_factory=dict, description="Extra environment for the trainer.")

    @model_validator(mode="after")
    def _validate(self) -> "FineTuner":
        if self.num_processes < 1:
            raise ValueError("FineTuner.num_processes must be >= 1")
        if self.launcher == "python" and self.num_processes != 1:
            raise ValueError("FineTuner: num_processes > 1 needs launcher='torchrun'")
        return self

    def command(self, spec_path: Path) -> list[str]:
        if self.launcher == "torchrun":
            return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={self.num_processes}", "-m", MODULE, "--spec", str(spec_path)]
        return [sys.executable, "-m", MODULE, "--spec", str(spec_path)]

    def threads(self) -> int:
        return self.threads_per_process or max(1, (os.cpu_count() or 1) // self.num_processes)

    def pipes_client(self) -> PipesSubprocessClient:
        env = {"TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(self.threads()), **self.extra_env}
        return PipesSubprocessClient(env=env, cwd=str(Path.cwd()))

    def checkpoint_dir(self, version: str) -> Path:
        return Path(self.work_dir).resolve() / version

    def run(self, context, spec: dict, version: str):
        """Write the spec beside the checkpoints and run the trainer; returns the Pipes invocation."""
        work = self.checkpoint_dir(version)
        work.mkdir(parents=True, exist_ok=True, mode=0o700)
        spec = {**spec, "work_dir": str(work), "threads": self.threads()}
        spec_path = work / "spec.json"
        spec_path.write_text(json.dumps(spec, indent=2, sort_keys=True))
        return self.pipes_client().run(command=self.command(spec_path), context=context)
