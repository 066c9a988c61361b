"""convbench harness: Hydra sweeps that check and time 2-D convolution implementations.

`python -m harness` (or `convbench`) runs it; `harness.run.run_job` is the per-job logic without Hydra.
"""
