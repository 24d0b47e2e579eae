"""The layer registry: stable keys for the layers a saved architecture may name.

A compressed model is saved as "build this base architecture, then put these layers at these paths"
(see `compress.models.checkpoint`). A layer is named by the key it was registered with
("nn.Conv2d", "compress.CodebookConv2d"), never by its module path, so a class can move without
breaking a saved checkpoint; the keys a class had before (`aliases`) keep loading. Only registered
layers can be named, so loading a checkpoint never imports anything a file asks for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from torch import nn

from compress.errors import ModelError
from compress.registry import Registry


@dataclass(frozen=True)
class LayerSpec:
    describe: Callable[[nn.Module], dict[str, Any]]
    build: Callable[[dict[str, Any]], nn.Module]
    cls: type


LAYERS: Registry[LayerSpec] = Registry("layer type", ModelError)
_KEYS: dict[type, str] = {}  # class -> its key (exact type: a subclass is not its parent)
_ALIASES: dict[str, str] = {}  # older key -> key


def register_layer(
    cls: type,
    describe: Callable[[nn.Module], dict[str, Any]] | None = None,
    build: Callable[[dict[str, Any]], nn.Module] | None = None,
    *,
    key: str,
    aliases: Iterable[str] = (),
) -> type:
    """Make `cls` nameable in saved architectures under `key`.

    By default a layer describes itself with a `get_config()` method and is built with
    `cls(**config)`. `aliases` are keys older checkpoints use for it; they load, but are never written.
    """
    if cls in _KEYS:
        raise ValueError(f"layer class {cls.__qualname__} is registered twice ('{_KEYS[cls]}', '{key}')")
    aliases = tuple(aliases)
    for name in (key, *aliases):
        if name in LAYERS or name in _ALIASES:
            raise ValueError(f"layer type '{name}' is registered twice")
    describe = describe or (lambda m: m.get_config())
    build = build or (lambda cfg, _cls=cls: _cls(**cfg))
    LAYERS.register(key, LayerSpec(describe, build, cls))
    _KEYS[cls] = key
    _ALIASES.update(dict.fromkeys(aliases, key))
    return cls


def layer_key(cls: type) -> str | None:
    """The key `cls` is saved under, or None if it is not registered."""
    return _KEYS.get(cls)


def describe_layer(module: nn.Module) -> tuple[str, dict[str, Any]] | None:
    """(registered key, constructor config) of `module`, or None if it is not registered."""
    key = _KEYS.get(type(module))
    if key is None:
        return None
    return key, LAYERS.get(key).describe(module)


def build_layer(name: str, config: dict[str, Any]) -> nn.Module:
    """The layer a saved architecture names by `name` (a key or an older alias) with `config`."""
    spec = LAYERS.get(_ALIASES.get(name, name))
    try:
        return spec.build(config)
    except (TypeError, ValueError) as e:
        raise ModelError(f"cannot build layer {name} with {config}: {e}") from None
