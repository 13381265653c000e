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

    launcher: Literal["python", "torchrun", "accelerate", "k8s"] = Field(
        default="python",
        description="python: one process; torchrun: `torchrun --standalone --nproc_per_node num_processes` "
        "(DDP; gloo on CPU, nccl on GPUs); accelerate: `accelerate launch --config_file accelerate_config` with "
        "num_processes ranks (FSDP or DeepSpeed ZeRO on GPUs, as the config says); k8s: a GPU pod (torchrun "
        "inside). Note `accelerate launch --cpu --num_processes N` was seen to start one process only, hence "
        "torchrun for DDP on CPU.",
    )
    num_processes: int = Field(default=1, description="Processes (ranks) for the torchrun and accelerate launchers.")
    accelerate_config: str | None = Field(
        default=None,
        description="launcher=accelerate: an accelerate config file, e.g. config/training/fsdp.yaml (FSDP) or "
        "config/training/deepspeed_zero3.yaml (DeepSpeed ZeRO-3); its num_processes is overridden by num_processes.",
    )
    threads_per_process: int | None = Field(
        default=None, description="torch threads per process; default: CPU cores divided by num_processes."
    )
    work_dir: str = Field(
        default=".tuneforge/training",
        description="Checkpoints of runs in progress, one folder per adapter version; a killed run resumes "
        "from its last checkpoint when materialized again.",
    )
    extra_env: dict[str, str] = Field(default_factory=dict, description="Extra environment for the trainer.")
    k8s_image: str | None = Field(default=None, description="launcher=k8s: image with tuneforge installed (the trainer pod's).")
    k8s_namespace: str = Field(default="tuneforge", description="launcher=k8s: namespace of the trainer pod.")
    k8s_gpus: int = Field(default=1, description="launcher=k8s: GPUs requested (nvidia.com/gpu); torchrun runs num_processes ranks.")
    k8s_node_selector: dict[str, str] = Field(
        default_factory=lambda: {"nvidia.com/gpu.present": "true"}, description="launcher=k8s: node selector of the GPU pool."
    )
    k8s_volume_claim: str = Field(
        default="tuneforge-artifacts", description="launcher=k8s: PVC holding the artifact store and work_dir, shared with Dagster."
    )
    k8s_mount_path: str = Field(
        default="/data", description="launcher=k8s: where the PVC is mounted, in the pod and in Dagster (work_dir and the store live under it).",
    )

    @model_validator(mode="after")
    def _validate(self) -> "FineTuner":
        if self.num_processes < 1:
            raise ValueError("FineTuner.num_processes must be >= 1")
        if self.launcher == "python" and self.num_processes != 1:
            raise ValueError("FineTuner: num_processes > 1 needs launcher='torchrun' (or 'accelerate', 'k8s')")
        if self.launcher == "accelerate" and not self.accelerate_config:
            raise ValueError("FineTuner.accelerate_config is required with launcher='accelerate' "
                             "(e.g. config/training/fsdp.yaml)")
        if self.launcher == "k8s":
            if not self.k8s_image:
                raise ValueError("FineTuner.k8s_image is required with launcher='k8s'")
            if not Path(self.work_dir).is_absolute() or not self.work_dir.startswith(self.k8s_mount_path.rstrip("/") + "/"):
                raise ValueError(f"FineTuner.work_dir must be an absolute path under k8s_mount_path ({self.k8s_mount_path}) "
                                 "so the trainer pod sees the spec and checkpoints")
        return self

    def command(self, spec_path: Path) -> list[str]:
        python = "python" if self.launcher == "k8s" else sys.executable  # the image's own Python in a pod
        if self.launcher == "accelerate":
            return [python, "-m", "accelerate.commands.launch", "--config_file", self.accelerate_config,
                    "--num_processes", str(self.num_processes), "-m", MODULE, "--spec", str(spec_path)]
        if self.launcher == "torchrun" or (self.launcher == "k8s" and self.num_processes > 1):
            return [python, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={self.num_processes}", "-m", MODULE, "--spec", str(spec_path)]
        return [python, "-m", MODULE, "--spec", str(spec_path)]

    def pod_spec(self) -> dict:
        """The trainer pod's base spec (launcher=k8s): GPUs, the GPU node pool, the shared artifact volume."""
        return {
            "restartPolicy": "Never",
            "nodeSelector": dict(self.k8s_node_selector),
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{
                "name": "trainer",
                "resources": {"limits": {"nvidia.com/gpu": str(self.k8s_gpus)}},
                "volumeMounts": [{"name": "artifacts", "mountPath": self.k8s_mount_path}],
            }],
            "volumes": [{"name": "artifacts", "persistentVolumeClaim": {"claimName": self.k8s_volume_claim}}],
        }

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
        if self.launcher == "k8s":
            from dagster_k8s import PipesK8sClient

            env = {"TOKENIZERS_PARALLELISM": "false", **self.extra_env}
            return PipesK8sClient().run(context=context, image=self.k8s_image, command=self.command(spec_path),
                                        namespace=self.k8s_namespace, env=env, base_pod_spec=self.pod_spec())
        return self.pipes_client().run(command=self.command(spec_path), context=context)
