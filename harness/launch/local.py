"""submitit_local with one GPU per job: hydra-submitit-launcher's LocalLauncher shows each job GPUs
`0..gpus_per_node-1` (overriding a mask the parent inherited) and starts the whole batch at once, so
every CUDA job would time on the same GPU. Here a CUDA job (or `auto` on a machine with a GPU) sees
exactly one of the parent's GPUs, no two jobs at once get the same one, and a job that dies is
recorded (harness.launch.UNFINISHED) instead of crashing the sweep."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher

from . import completed_return, record_unfinished
from .gpus import check_launcher_device, job_device, one_gpu_each, visible_gpus


@dataclass
class ConvbenchLocalConf(LocalQueueConf):
    _target_: str = "hydra_plugins.convbench_launchers.ConvbenchLocalLauncher"


class ConvbenchLocalLauncher(LocalLauncher):
    """LocalLauncher giving each CUDA job its own GPU (module docstring)."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.gpu_of_job: Dict[int, Optional[str]] = {}

    def __call__(self, sweep_overrides: List[str], job_dir_key: str, job_num: int, job_id: str,
                 singleton_state: Dict[type, Any]) -> Any:
        # runs in the job's process, before anything initialises CUDA: show it its one GPU, or none
        os.environ["CUDA_VISIBLE_DEVICES"] = self.gpu_of_job.get(job_num) or ""
        return super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[Any]:
        devices = [job_device(self, o) for o in job_overrides]
        for device in devices:
            try:
                check_launcher_device(device, "submitit_local")
            except ValueError as exc:
                raise SystemExit(f"convbench: {exc}") from None
        self.params["gpus_per_node"] = 0  # submitit would show 0..n-1; __call__ sets the job's own mask
        returns: list = []
        for batch in one_gpu_each(devices, visible_gpus()):
            start = initial_job_idx + len(returns)
            self.gpu_of_job = {start + k: gpu for k, gpu in enumerate(batch)}
            returns += self._launch_batch(job_overrides[len(returns):len(returns) + len(batch)], start)
        return returns

    def _launch_batch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
        """The parent's launch, but a job that dies becomes a recorded unfinished job, not a crash."""
        import submitit
        from hydra.core.singleton import Singleton

        executor = submitit.AutoExecutor(cluster="local", folder=self.params["submitit_folder"])
        executor.update_parameters(**{k: v for k, v in self.params.items() if k != "submitit_folder"})
        os.makedirs(str(self.config.hydra.sweep.dir), exist_ok=True)
        args = [(list(o), "hydra.sweep.dir", initial_job_idx + k, f"job_id_for_{initial_job_idx + k}",
                 Singleton.get_state()) for k, o in enumerate(job_overrides)]
        jobs = executor.map_array(self, *zip(*args))
        out = []
        for k, job in enumerate(jobs):
            try:
                result = job.results()[0]
            except Exception as exc:
                record_unfinished(initial_job_idx + k, "FAILED", str(exc).strip().splitlines()[0], job.job_id)
                result = completed_return(job_overrides[k])
            out.append(result)
        return out


def register() -> None:
    from hydra.core.config_store import ConfigStore
    ConfigStore.instance().store(group="hydra/launcher", name="convbench_submitit_local", node=ConvbenchLocalConf,
                                 provider="convbench")
