"""Hydra accepts launcher classes only from the `hydra_plugins` namespace: these thin subclasses make
convbench's launchers (harness/launch/) selectable. Nothing is defined here but the names."""
try:
    from harness.launch.local import ConvbenchLocalLauncher as _Local
    from harness.launch.slurm import ConvbenchSlurmLauncher as _Slurm

    class ConvbenchSlurmLauncher(_Slurm):
        pass

    class ConvbenchLocalLauncher(_Local):
        pass
except ImportError:  # hydra-submitit-launcher not installed
    pass

try:
    from harness.launch.ray import ConvbenchRayLauncher as _Ray

    class ConvbenchRayLauncher(_Ray):
        pass
except ImportError:  # hydra-ray-launcher not installed (pip install -e ".[ray]")
    pass
