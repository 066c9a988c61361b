"""Convolution implementations behind one name-based API.

    implementations.names()            sorted available names ('cudnn', 'fft', 'loop', 'unfold', ...)
    implementations.get(name)          a function with F.conv2d's signature; also "pkg.mod:function"
    @implementations.register(name)    make your own function available by name
    implementations.Conv2d(..., impl=) nn.Conv2d drop-in computing with the chosen implementation
    implementations.Unsupported        raise it for inputs you deliberately do not handle
    implementations.ConvArgumentError  what prepare() raises for arguments F.conv2d rejects (a ValueError
                                       and a RuntimeError, like F.conv2d's; ConvArgumentTypeError for types)
"""
from .registry import (ENTRY_POINT_GROUP, UnknownImplementation, Unsupported, get, names, register,
                       unsupported_reason)
from .params import ConvArgumentError, ConvArgumentTypeError, ConvParams, prepare
from . import cudnn, fft, loop, unfold, winograd  # noqa: F401  (built-ins register themselves)
from .module import Conv2d

__all__ = ["names", "get", "register", "Conv2d", "Unsupported", "UnknownImplementation", "unsupported_reason",
           "ConvParams", "prepare", "ConvArgumentError", "ConvArgumentTypeError", "ENTRY_POINT_GROUP"]
