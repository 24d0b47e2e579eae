"""Handlers by op kind: how channel labels flow through an op, and how a layer is resized.

A handler is registered for a layer type (`call_module` nodes, looked up along the type's MRO), for
a function (`call_function`, e.g. `F.conv2d`), or for a method name (`call_method`, e.g. `view`).
Flow handlers are called as `fn(graph, node, args, kwargs)` (module handlers get the module too:
`fn(graph, node, module, args, kwargs)`) with the labels of the inputs, and return the labels of the
output; raising `Unsupported` leaves the channels of the inputs whole, with the message as reason.
Handlers registered with `params=True` receive the parameters they are given as `P` (so they can
slice them along the axis they scale); every other handler sees their default labels.

Resize handlers (`register_resize`) rebuild a layer whose parameters were sliced:
`fn(old_module, new_params) -> new_module | None` (None: resized in place).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn


@dataclass
class Handler:
    fn: Callable[..., Any]
    params: bool = False


MODULES: dict[type, Handler] = {}
FUNCTIONS: dict[Any, Handler] = {}
FUNCTION_NAMES: dict[str, Handler] = {}
METHODS: dict[str, Handler] = {}
RESIZE: dict[type, Callable[[nn.Module, dict], nn.Module | None]] = {}


def register_module(*types: type, params: bool = False):
    def deco(fn):
        for t in types:
            MODULES[t] = Handler(fn, params)
        return fn

    return deco


def register_function(*fns: Any, names: tuple[str, ...] = (), params: bool = False):
    """Register for function objects, and for functions known only by name (e.g. torchvision ops)."""

    def deco(fn):
        for f in fns:
            FUNCTIONS[f] = Handler(fn, params)
        for n in names:
            FUNCTION_NAMES[n] = Handler(fn, params)
        return fn

    return deco


def register_method(*names: str, params: bool = False):
    def deco(fn):
        for n in names:
            METHODS[n] = Handler(fn, params)
        return fn

    return deco


def register_resize(*types: type):
    def deco(fn):
        for t in types:
            RESIZE[t] = fn
        return fn

    return deco


def _by_mro(table: dict[type, Any], cls: type) -> Any:
    for base in cls.__mro__:
        if base in table:
            return table[base]
    return None


def module_handler(m: nn.Module) -> Handler | None:
    return _by_mro(MODULES, type(m))


def function_handler(fn: Any) -> Handler | None:
    try:
        h = FUNCTIONS.get(fn)
    except TypeError:  # unhashable callables
        h = None
    return h or FUNCTION_NAMES.get(getattr(fn, "__name__", ""))


def method_handler(name: str) -> Handler | None:
    return METHODS.get(name)


def resize_handler(m: nn.Module):
    return _by_mro(RESIZE, type(m))
