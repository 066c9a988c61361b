"""hydra-ray-launcher, made to work as its README form says:

- joining a running cluster (`hydra.launcher.ray.init.address=auto`) works: the plug-in always sets
  `object_store_memory`, which Ray refuses when connecting to an existing cluster;
- `num_gpus` null (the default) follows each job's device: a CUDA job (or `auto` where the cluster has
  GPUs) holds one GPU, so Ray shows it only that GPU and runs at most one job per GPU; a job that
  holds none is shown none (today's Ray shows such a task every GPU);
- a job whose task fails or is lost is recorded (harness.launch.UNFINISHED) instead of crashing the
  sweep, so the table of the others is still written."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher

from . import completed_return, record_unfinished
from .gpus import check_launcher_device, ray_init_options, ray_remote_options


class ConvbenchRayLauncher(RayLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[Any]:
        import ray
        from hydra.core.singleton import Singleton
        from hydra.core.utils import JobStatus, filter_overrides, setup_globals
        from hydra_plugins.hydra_ray_launcher._launcher_util import _run_job
        from omegaconf import open_dict

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        if not ray.is_initialized():
            opts = ray_init_options(self.ray_cfg.init)
            try:
                ray.init(**opts)
            except ValueError as exc:  # address null, but ray.init found a running cluster and joined it
                if "object_store_memory" not in str(exc):
                    raise
                opts.pop("object_store_memory")
                ray.init(**opts)
        cluster_gpus = ray.cluster_resources().get("GPU", 0)
        runs = []
        for k, overrides in enumerate(job_overrides):
            idx = initial_job_idx + k
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            device = str(sweep_config.get("device", "auto"))
            try:
                check_launcher_device(device, "Ray")
            except ValueError as exc:
                raise SystemExit(f"convbench: {exc}") from None
            opts = ray_remote_options(self.ray_cfg.remote, device, cluster_gpus)
            print(f"convbench: Ray job #{idx}: {' '.join(filter_overrides(overrides))} "
                  f"({opts['num_gpus']} GPU)", flush=True)
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = f"job_id_for_{idx}"
                sweep_config.hydra.job.num = idx
            runs.append(ray.remote(**opts)(_run_job).remote(
                hydra_context=self.hydra_context, sweep_config=sweep_config, task_function=self.task_function,
                singleton_state=Singleton.get_state()))
        returns = []
        for k, run in enumerate(runs):
            try:
                ret = ray.get(run)
            except Exception as exc:  # the task died (worker killed, node lost, cancelled)
                record_unfinished(initial_job_idx + k, "FAILED", str(exc).strip().splitlines()[0])
                ret = completed_return(job_overrides[k])
            if ret.status == JobStatus.FAILED:
                record_unfinished(initial_job_idx + k, "FAILED", repr(ret._return_value))
                ret = completed_return(job_overrides[k], ret.cfg)
            returns.append(ret)
        return returns
