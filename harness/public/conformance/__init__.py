"""`pytest --pyargs convbench.conformance --convbench-impl pkg.mod:fn`: convbench's conformance suite on a
named implementation, with no test file of your own (`python -m convbench.conformance pkg.mod:fn` for
short). The options come from the pytest plugin (plugin.py, a `pytest11` entry point); the test is
test_conv2d.py."""
