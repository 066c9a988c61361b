"""Hydra accepts launcher classes only from the `hydra_plugins` namespace: these thin subclasses make
convbench's launchers (harness/launch/) selectable, and importing this module (Hydra's plug-in scan, before
any config is composed) registers their configs, hydra/launcher=convbench_slurm and
convbench_submitit_local, which conf/launcher/*.yaml select."""
try:
    from harness.launch.local import ConvbenchLocalLauncher as _Local
    from harness.launch.slurm import ConvbenchSlurmLauncher as _Slurm

    class ConvbenchSlurmLauncher(_Slurm):
        pass

    class ConvbenchLocalLauncher(_Local):
        pass

    from harness.launch import register as _register
    _register()
except ImportError:  # hydra-submitit-launcher not installed
    pass

try:
    from harness.launch.ray import ConvbenchRayLauncher as _Ray

    class ConvbenchRayLauncher(_Ray):
        pass
except ImportError:  # hydra-ray-launcher not installed (pip install -e ".[ray]")
    pass
