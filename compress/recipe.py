"""Recipes: YAML read with `yaml.safe_load` into typed configs, validated before anything runs.

    name: quickstart
    data: {name: digits, image_size: 32}
    steps:                       # in order; each step's output is a variant
      - name: teacher
        technique: train
        model: torchvision:resnet18
        params: {epochs: 4}
      - name: student
        technique: distill
        method: funmatch
        model: builtin:simple_cnn        # a model spec, or the name of an earlier step
        model_kwargs: {width: 0.5}
        teacher: teacher
        params: {epochs: 10}
    export: {exporter: auto}
    bench: {batch_size: 1}
    report: {baseline: teacher}
    seeds: 3                     # run it at seeds 0, 1, 2 and summarise mean ± spread (`compress run`)

Names resolve only through registries; a recipe never names code to import.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from compress.bench import BenchConfig
from compress.config import from_dict, to_dict
from compress.data import DataConfig
from compress.errors import RecipeError
from compress.export.onnx import ExportConfig

DEFAULT_METHOD = {"train": "supervised"}


@dataclass
class StepConfig:
    """One step of a recipe.

    Attributes:
        name: the variant's name (unique; later steps refer to it).
        technique: train, distill, prune or quantize.
        method: the technique's method (train: supervised).
        model: the input model: an earlier step's name or a model spec.
        model_kwargs: constructor arguments when `model` is a fresh architecture.
        teacher: for distillation: an earlier step's name or a model spec.
        params: the method's config (see `compress methods`).
        data: this step's data, if not the recipe's.
        variant: export, bench and report this step's output.
        weights: pretrained weights for a fresh architecture `model` (a path or dist:PACKAGE/PATH).
        weights_map: how the file's tensors find the model's: names, or order.
        preprocessing: overrides of the model's preprocessing (mean, std, crop_pct, resize, ...).
    """

    name: str
    technique: str
    model: str
    method: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    teacher: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    data: DataConfig | None = None
    variant: bool = True
    weights: str | None = None
    weights_map: Literal["names", "order"] = "names"
    preprocessing: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReportConfig:
    """Attributes:
    baseline: the variant speedups and deltas are relative to (default: the first).
    title: report heading.
    """

    baseline: str | None = None
    title: str = ""


MAX_SEEDS = 100


@dataclass
class Recipe:
    """Attributes:
    seed: the seed of every step (initial weights, data order, augmentation); the data split has its
        own `data.seed`, so the held-out set stays the same when this one changes.
    seeds: run the whole recipe this many times, at seeds seed, seed+1, ..., and summarise them.
    """

    name: str
    steps: list[StepConfig]
    data: DataConfig = field(default_factory=DataConfig)
    seed: int = 0
    seeds: int = field(default=1, metadata={"range": (1, MAX_SEEDS)})
    export: ExportConfig = field(default_factory=ExportConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    # filled by validation: the typed config of every step
    step_configs: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = to_dict(self)
        d.pop("step_configs", None)
        if d.get("seeds") == 1:  # a single run's manifest stays what it was before `seeds` existed
            d.pop("seeds")
        if not d["bench"].get("backends"):  # nor does a single-backend bench section
            d["bench"].pop("backends", None)
        return d


MAX_STEPS = 100


def load_recipe(path: str | Path) -> Recipe:
    """Read and fully validate a recipe file."""
    from compress.yamlfile import read_yaml

    return parse_recipe(read_yaml(Path(path), "recipe"), where=str(path))


def parse_recipe(raw: Any, *, where: str = "recipe") -> Recipe:
    """Validate plain data into a Recipe: keys, types, names, references, method params."""
    from compress.methods import TECHNIQUES, get_method
    from compress.models.sources import ARCHITECTURES
    from compress.yamlfile import check_size

    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: a recipe must be a mapping with 'name' and 'steps'")
    check_size(raw, where)
    if "step_configs" in raw:  # filled by validation, never read from a file
        raise RecipeError(f"{where}: unknown key 'step_configs'")
    if isinstance(raw.get("steps"), list) and len(raw["steps"]) > MAX_STEPS:
        raise RecipeError(f"{where}: {len(raw['steps'])} steps; a recipe has at most {MAX_STEPS}")
    recipe = from_dict(Recipe, _named_backends(raw, where), where=where)
    from compress.bench import check_backends

    check_backends(recipe.bench, where=f"{where}: bench")
    if not recipe.steps:
        raise RecipeError(f"{where}: 'steps' is empty")
    seen: set[str] = set()
    for i, step in enumerate(recipe.steps):
        at = f"{where}: steps[{i}]"
        if step.name in seen:
            raise RecipeError(f"{at}.name: '{step.name}' is used twice")
        if not step.name.replace("_", "").replace("-", "").isalnum():
            raise RecipeError(f"{at}.name: '{step.name}' must be letters, digits, '-' or '_'")
        if step.technique not in TECHNIQUES:
            raise RecipeError(
                f"{at}.technique: unknown technique '{step.technique}'; available: {', '.join(TECHNIQUES)}"
            )
        method_name = step.method or DEFAULT_METHOD.get(step.technique)
        if method_name is None:
            raise RecipeError(f"{at}.method: missing (technique '{step.technique}' has no default)")
        try:
            method = get_method(step.technique, method_name)
        except RecipeError as e:
            raise RecipeError(f"{at}: {e}") from None
        step.method = method_name
        recipe.step_configs[step.name] = step_config(method, step.params, recipe.seed, where=f"{at}.params")
        for key in ("model", "teacher"):
            ref = getattr(step, key)
            if ref is None:
                if key == "teacher" and method.needs_teacher:
                    raise RecipeError(f"{at}.teacher: method '{method_name}' needs a teacher")
                continue
            if ref in seen:
                continue
            source, sep, _ = ref.partition(":")
            if not (sep and source in ARCHITECTURES) and not Path(ref).exists():
                raise RecipeError(
                    f"{at}.{key}: '{ref}' is neither an earlier step ({', '.join(sorted(seen)) or 'none'}) "
                    f"nor a model spec ({', '.join(s + ':NAME' for s in ARCHITECTURES)}) nor an existing path"
                )
        seen.add(step.name)
    if recipe.report.baseline is not None and recipe.report.baseline not in seen:
        raise RecipeError(f"{where}: report.baseline: no step named '{recipe.report.baseline}'")
    return recipe


def _named_backends(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """`bench.backends` with each plain name as the mapping `{backend: NAME}` it is short for."""
    section = raw.get("bench")
    if not isinstance(section, dict) or "backends" not in section:
        return raw
    names = section["backends"]
    if "backend" in section:
        raise RecipeError(f"{where}: bench: give 'backend' or 'backends', not both")
    if not isinstance(names, list) or not names:
        raise RecipeError(f"{where}: bench.backends: expected a non-empty list of backends")
    backends = [{"backend": b} if isinstance(b, str) else b for b in names]
    return {**raw, "bench": {**section, "backends": backends}}


def step_config(method: Any, params: dict[str, Any], seed: int, *, where: str) -> Any:
    """A step's typed config, with the recipe's `seed` in every seed its params leave unset, nested
    sections included (distill's `train`, prune's `finetune`), so changing the recipe's seed changes
    every step's training, not only the methods with a top-level seed."""
    return _seeded(from_dict(method.config, params, where=where), params, seed)


def _seeded(config: Any, given: dict[str, Any], seed: int) -> Any:
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if not f.init or (f.name in given and not isinstance(given[f.name], dict)):
            continue
        if f.name == "seed" and isinstance(value, int) and not isinstance(value, bool):
            changes["seed"] = seed
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            new = _seeded(value, given.get(f.name) or {}, seed)
            if new is not value:
                changes[f.name] = new
    return dataclasses.replace(config, **changes) if changes else config


def reseed(recipe: Recipe, seed: int) -> Recipe:
    """`recipe` run once at `seed`: every step's config resolved again with it (one run of many)."""
    from compress.methods import get_method

    out = dataclasses.replace(recipe, seed=seed, seeds=1, step_configs={})
    for i, step in enumerate(recipe.steps):
        method = get_method(step.technique, step.method or DEFAULT_METHOD[step.technique])
        out.step_configs[step.name] = step_config(method, step.params, seed, where=f"steps[{i}].params")
    return out
