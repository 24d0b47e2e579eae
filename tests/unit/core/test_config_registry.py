from dataclasses import dataclass, field

import pytest

from compress.config import from_dict, to_dict
from compress.errors import RecipeError
from compress.registry import Registry


@dataclass
class Inner:
    rate: float = 0.5


@dataclass
class Outer:
    name: str
    count: int = 1
    inner: Inner = field(default_factory=Inner)
    tags: list[str] = field(default_factory=list)
    mode: str | None = None


def test_from_dict_fills_nested_and_coerces_ints_to_float():
    cfg = from_dict(Outer, {"name": "a", "inner": {"rate": 1}, "tags": ["x"]})
    assert cfg.inner.rate == 1.0 and isinstance(cfg.inner.rate, float)
    assert to_dict(cfg) == {"name": "a", "count": 1, "inner": {"rate": 1.0}, "tags": ["x"], "mode": None}


def test_unknown_key_names_key_and_path():
    with pytest.raises(RecipeError, match=r"r.yaml: steps\[0\].inner: unknown key 'rat'"):
        from_dict(Outer, {"name": "a", "inner": {"rat": 1}}, where="r.yaml: steps[0]")


def test_wrong_type_and_missing_key():
    with pytest.raises(RecipeError, match=r"cfg.count: expected an integer"):
        from_dict(Outer, {"name": "a", "count": "3"}, where="cfg")
    with pytest.raises(RecipeError, match="missing required key 'name'"):
        from_dict(Outer, {}, where="cfg")
    with pytest.raises(RecipeError, match="expected true or false"):
        from dataclasses import make_dataclass

        from_dict(make_dataclass("B", [("flag", bool, field(default=False))]), {"flag": 1})


def test_registry_lists_available_names():
    reg: Registry[int] = Registry("widget")
    reg.register("b", 2)
    reg.register("a", 1)
    assert reg.get("a") == 1
    with pytest.raises(Exception, match="unknown widget 'c'; available: a, b"):
        reg.get("c")
    with pytest.raises(ValueError):
        reg.register("a", 3)


def test_nested_section_overrides_only_named_keys():
    """A recipe that sets funmatch's epochs keeps its patient schedule (Adam, cosine, clipping)."""
    from compress.distill.funmatch import FunMatchConfig

    cfg = from_dict(FunMatchConfig, {"train": {"epochs": 3, "lr": 0.002}})
    assert (cfg.train.epochs, cfg.train.lr) == (3, 0.002)
    assert (cfg.train.optimizer, cfg.train.schedule, cfg.train.grad_clip) == ("adam", "cosine", 1.0)
    with pytest.raises(RecipeError, match="train.epochs"):
        from_dict(FunMatchConfig, {"train": {"epochs": -1}})
