"""How many GPUs a job asks for, and which one it sees: exactly one when its `device` is CUDA (or `auto`
where the job runs has a GPU), none for the CPU. Two timing jobs on one GPU distort each other, and
today's schedulers do not prevent it by themselves: Ray gives a task that asks for no GPU every GPU
(it used to hide them), and submitit_local shows each job GPUs `0..n-1` whatever mask the parent had.
"""
from __future__ import annotations

import os
import re
from typing import Any, Optional, Sequence

from omegaconf import DictConfig


def job_device(launcher: Any, overrides: Sequence[str]) -> str:
    """The `device` one job of the sweep runs with (a swept device differs from job to job)."""
    cfg = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
    return str(cfg.get("device", "auto"))


def check_launcher_device(device: str, launcher: str) -> None:
    """`cuda:N` names a GPU of the machine, but a job of a launcher sees only its own GPU, as cuda:0."""
    if re.fullmatch(r"cuda:\d+", device) and device != "cuda:0":
        raise ValueError(f"device={device}: with {launcher} each job sees only the one GPU it was given, as "
                         "cuda:0; use device=cuda (or device=auto)")


def gpus_for(device: str, has_gpu: bool) -> int:
    """GPUs one job needs: 1 for cuda / cuda:0, 1 for auto where the job runs has a GPU, else 0."""
    if device.startswith("cuda"):
        return 1
    if device == "auto":
        return int(bool(has_gpu))
    return 0


def visible_gpus(environ: Optional[dict] = None) -> list[str]:
    """This process's GPUs as CUDA_VISIBLE_DEVICES entries (indices or UUIDs), honouring an inherited
    mask: with CUDA_VISIBLE_DEVICES=2,3 the jobs must get 2 and 3, not 0 and 1."""
    import torch
    environ = os.environ if environ is None else environ
    count = torch.cuda.device_count()
    mask = environ.get("CUDA_VISIBLE_DEVICES")
    if mask is None:
        return [str(i) for i in range(count)]
    return [m.strip() for m in mask.split(",") if m.strip()][:count]


def one_gpu_each(devices: Sequence[str], gpus: Sequence[str]) -> list[list[Optional[str]]]:
    """Split jobs (given by their devices) into batches that run at once, with the GPU each job sees
    (None: no GPU). GPU jobs get distinct GPUs, so a batch holds at most len(gpus) of them; CPU jobs
    need none (their overlap on the cores is measured and reported as `concurrent`)."""
    batches: list[list[Optional[str]]] = [[]]
    used = 0
    for device in devices:
        if gpus_for(device, bool(gpus)) and gpus:
            if used == len(gpus):
                batches.append([])
                used = 0
            batches[-1].append(gpus[used])
            used += 1
        else:
            batches[-1].append(None)
    return batches


def ray_remote_options(remote: DictConfig | dict, device: str, cluster_gpus: float) -> dict:
    """The Ray task options of one job: `num_gpus` null (the default) follows the device, so a CUDA job
    holds one GPU (Ray then sets its CUDA_VISIBLE_DEVICES to that GPU and runs at most one job per GPU)
    and a CPU job holds none; an explicit `num_gpus` is kept."""
    from omegaconf import OmegaConf
    opts = OmegaConf.to_container(remote, resolve=True) if OmegaConf.is_config(remote) else dict(remote)
    if opts.get("num_gpus") is None:
        opts["num_gpus"] = gpus_for(device, cluster_gpus > 0)
    if opts["num_gpus"] == 0 and device != "cpu" and device != "mps":
        # Ray shows a task that holds no GPU every GPU of its node: keep the job off them explicitly
        opts.setdefault("runtime_env", {}).setdefault("env_vars", {})["CUDA_VISIBLE_DEVICES"] = ""
    return opts


def ray_init_options(init: DictConfig | dict) -> dict:
    """ray.init's options: hydra-ray-launcher sets object_store_memory for a Ray it starts itself, but
    Ray refuses it when joining an existing cluster (address=auto or host:port), so drop it there."""
    from omegaconf import OmegaConf
    opts = OmegaConf.to_container(init, resolve=True) if OmegaConf.is_config(init) else dict(init)
    if opts.get("address"):
        opts.pop("object_store_memory", None)
    else:
        opts.setdefault("object_store_memory", 78643200)  # the plug-in's default for a local Ray
    return opts
