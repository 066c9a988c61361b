"""shiftconv through convbench's conformance suite: one test per check and case, ids like
`test_conforms[shiftconv-values-opinfo_stride2_pad2-float32-cpu]`, so `-k` and `--lf` work."""
import shiftconv
from convbench.testing import parametrize_with_checks


@parametrize_with_checks([shiftconv.conv2d], max_examples=20)
def test_conforms(check):
    check()
