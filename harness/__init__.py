"""convbench harness: Hydra sweeps that check and time 2-D convolution implementations.

The code follows the data, and imports run one way (tests/test_layout.py enforces it):

    config.py     the configuration schema (the one source of defaults)
    measure/      config -> cases -> checks, timing, memory -> rows       (imports config, table)
    table/        the results table: schema, typed rows, job folders, reading any version (imports nothing)
    report/       for people: analysis, plots, report files, compare      (imports table)
    public/       `import convbench`: the facade and convbench.testing, the conformance suite (imports measure)
    configs.py    where the configs are: in the package or a checkout, and the user's ./conf, ./convbench

At the top sit the entry points and the sweep's end: `python -m harness` (__main__, the Hydra app,
with callbacks.py), finish.py and summary.py (aggregate, report, terminal summary), aggregate.py,
perf.py and timer_agreement.py; capture.py (a model's conv shapes -> a suite) and network.py (the
swap-every-conv check on a whole model). `harness.measure.job.run_job` is the per-job logic without Hydra.
"""
