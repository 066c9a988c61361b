"""A plug-in that crashes while it is imported (a native extension failing to load): the sweep must
refuse it before any job, with a message, and without dying itself."""
import ctypes

import implementations


@implementations.register("never_registered")
def conv(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    raise AssertionError("unreachable")


ctypes.string_at(0)
