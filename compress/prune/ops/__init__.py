"""One handler per op or layer kind (see `registry`); importing this package registers them all.

A new layer kind is one small module here: a flow handler (how labels pass through it) and, for a
layer with parameters, a resize handler (how it is rebuilt with fewer channels).
"""

from compress.prune.ops import aten, attention, elementwise, index, layers, reduce, shape  # noqa: F401 - registers
from compress.prune.ops.registry import (
    function_handler,
    method_handler,
    module_handler,
    register_function,
    register_method,
    register_module,
    register_resize,
    resize_handler,
)

__all__ = [
    "function_handler",
    "method_handler",
    "module_handler",
    "register_function",
    "register_method",
    "register_module",
    "register_resize",
    "resize_handler",
]
