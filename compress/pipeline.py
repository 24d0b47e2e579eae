"""The pipeline: apply techniques, save, export, bench, and run whole recipes.

Used by the CLI subcommands (one technique each) and by `compress run` (a recipe of steps), so a
variant made by hand and one made by a recipe have the same run-directory layout:

    DIR/manifest.json   what was done, inputs with hashes, config, versions, artifacts, metrics
    DIR/model.pt        the `torch` artifact (compress checkpoint)
    DIR/model.onnx      the `onnx` artifact (exported and parity-checked)
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compress.config import to_dict
from compress.errors import CompressError, DataError
from compress.runs import RunDir, read_manifest


def load_input(
    spec: str,
    data: Any = None,
    *,
    kwargs: dict | None = None,
    trust_code: bool = False,
    num_classes: int | None = None,
    input_shape: tuple[int, ...] | None = None,
    weights: str | Path | None = None,
    weights_map: str = "names",
    preprocessing: dict | None = None,
    seed: int = 0,
):
    """Load a model spec, building fresh architectures to fit the data (initial weights from `seed`).

    With pretrained `weights`, the file decides the number of classes, not the data."""
    model = _load_input(
        spec,
        data,
        kwargs=kwargs,
        trust_code=trust_code,
        num_classes=num_classes,
        input_shape=input_shape,
        weights=weights,
        weights_map=weights_map,
        preprocessing=preprocessing,
        seed=seed,
    )
    if preprocessing and not _is_architecture(spec):
        from compress.models.preprocess import resolve_preprocessing

        model.preprocessing = resolve_preprocessing(model.preprocessing, preprocessing)
    return model


def _is_architecture(spec: str) -> bool:
    from compress.models.sources import find_source

    source, sep, _ = spec.partition(":")
    return bool(sep) and not Path(spec).exists() and find_source(source)


def _load_input(spec, data, *, kwargs, trust_code, num_classes, input_shape, weights, weights_map, preprocessing, seed):
    from functools import partial

    from compress.models.sources import load_model as _load

    load_model = partial(_load, weights=weights, weights_map=weights_map, preprocessing=preprocessing, seed=seed)

    if num_classes is not None and num_classes < 1:
        raise DataError(f"--num-classes must be at least 1, got {num_classes}")
    if data is not None:
        if num_classes is not None and data.task == "classification" and num_classes < data.num_classes:
            raise DataError(f"--num-classes {num_classes} is fewer than the {data.num_classes} classes in the data")
        nc = num_classes if num_classes is not None else (None if weights else (data.num_classes or None))
        model = load_model(
            spec,
            num_classes=nc,
            in_channels=data.input_shape[0],
            input_shape=tuple(data.input_shape),
            kwargs=kwargs,
            trust_code=trust_code,
        )
        if model.input_shape and tuple(model.input_shape) != tuple(data.input_shape):
            raise DataError(
                f"{spec} takes inputs of shape {list(model.input_shape)} but the data gives {list(data.input_shape)}; "
                f"use --image-size {model.input_shape[-1]} --channels {model.input_shape[0]}"
            )
        if model.task != data.task:
            raise DataError(f"{spec} is a {model.task} model but the data is for {data.task}")
        return model
    return load_model(spec, num_classes=num_classes, input_shape=input_shape, kwargs=kwargs, trust_code=trust_code)


def run_technique(technique: str, config: Any, model, *, data=None, teacher=None, workdir: Path | None = None):
    """Apply one technique through its verb (which records the step in the model's history)."""
    from compress import api as verbs

    if technique == "train":
        return verbs.train(model, data, config, workdir=workdir)
    if technique == "prune":
        return verbs.prune(model, config, data=data, teacher=teacher, workdir=workdir)
    if technique == "quantize":
        return verbs.quantize(model, config, data=data, workdir=workdir)
    if technique == "distill":
        return verbs.distill(model, teacher, config, data=data, workdir=workdir)
    raise CompressError(f"unknown technique '{technique}'")


def write_variant(
    run: RunDir, result, *, data=None, export_config=None, bench_config=None, export: bool = True
) -> dict[str, Any]:
    """Save a technique's result into `run`: checkpoint, ONNX (exported or the method's own),
    static figures, and (with `bench_config`) latency and metrics measured through the backend."""
    from compress.analysis import count_macs, count_params, onnx_summary
    from compress.models.checkpoint import save_model

    metrics: dict[str, Any] = {}
    model = result.model
    if model is not None:
        save_model(model, run.file("model.pt"))
        run.add_artifact("torch", "model.pt")
    run.set_steps(result.history or (model.history if model is not None else []))
    if model is not None:
        metrics["params"] = count_params(model.module)
        try:
            metrics["macs"] = count_macs(model.module, model.input_shape)
        except Exception:  # a layer FlopCounterMode cannot trace: leave MACs out, do not fail the run
            metrics["macs"] = None
    if result.onnx is not None:
        shutil.copyfile(result.onnx, run.file("model.onnx"))
        run.add_artifact("onnx", "model.onnx")
    elif export and model is not None:
        from compress.export.onnx import export_onnx

        report = export_onnx(model, run.file("model.onnx"), export_config)
        run.manifest["export"] = report
        run.add_artifact("onnx", "model.onnx")
    for role, path in result.files.items():
        name = Path(path).name
        if (run.work / name).exists():
            name = f"{role}{Path(path).suffix}"
        shutil.copyfile(path, run.file(name))
        run.add_artifact(role, name)
    if "onnx" in run.manifest["artifacts"]:
        summary = onnx_summary(run.work / "model.onnx")
        metrics["size_bytes"] = summary["bytes"]
        if metrics.get("params") is None:
            metrics["params"] = summary["params"]
    metrics.update({k: v for k, v in result.metrics.items() if _plain_ok(v)})
    if bench_config is not None and "onnx" in run.manifest["artifacts"]:
        metrics.update(bench_variant(run, bench_config, data=data))
    run.update_metrics(metrics)
    run.save()
    return metrics


def bench_variant(run: RunDir, config, *, data=None) -> dict[str, Any]:
    """A variant's figures on each backend of `config` (`BenchConfig.targets`), each on the artifact
    that backend runs. The first is the primary one: `latency`, `runtime` and the task metrics
    (`deployed_*`); with `config.backends`, `benches` holds every backend's latency beside its own
    `session.info()`, or `not_run` with the reason (a variant without the artifact it needs)."""
    import dataclasses

    from compress.backends import artifact_role
    from compress.bench import bench

    metrics: dict[str, Any] = {}
    benches = []
    for i, cfg in enumerate(config.targets()):
        entry: dict[str, Any] = {"label": cfg.label(), "backend": cfg.backend, "device": cfg.device}
        benches.append(entry)
        artifact = run.manifest["artifacts"].get(artifact_role(cfg.backend))
        if artifact is None:
            entry["not_run"] = f"no {artifact_role(cfg.backend)} artifact"
            continue
        if i:  # the task metrics come from the primary backend only; the others are timed
            cfg = dataclasses.replace(cfg, accuracy=False)
        measured = bench(run.work / artifact["path"], cfg, data=data)
        entry.update({k: v for k, v in measured.items() if k == "runtime" or k.startswith("latency")})
        if i == 0:
            metrics["latency"] = measured["latency"]
            metrics["runtime"] = measured["runtime"]
            for k, v in measured.get("metrics", {}).items():
                metrics[f"deployed_{k}"] = v
    if config.backends:
        metrics["benches"] = benches
    return metrics


def _plain_ok(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool, list, dict)) or v is None


def run_recipe(
    recipe,
    out: str | Path,
    *,
    force: bool = False,
    resume: bool = False,
    trust_code: bool = False,
    recipe_path: str | None = None,
) -> Path:
    """Run every step of `recipe` into run directory `out`, then write its report.

    An interruption keeps the staged run for `resume=True`; any other failure removes it."""
    from compress.runs import abort_open_runs

    try:
        return _run_recipe(recipe, out, force=force, resume=resume, trust_code=trust_code, recipe_path=recipe_path)
    except KeyboardInterrupt:
        abort_open_runs(keep=True)
        raise
    except BaseException:
        abort_open_runs(keep=False)
        raise


def _run_recipe(recipe, out, *, force, resume, trust_code, recipe_path) -> Path:
    from compress.bench import check_machine
    from compress.data import load_data
    from compress.models.sources import load_model
    from compress.report import build_report

    check_machine(recipe.bench)  # a backend this machine cannot run fails now, not after the training
    run = RunDir(out, "run", force=force, resume=resume)
    if recipe_path:
        run.add_input("recipe", recipe_path, recipe_path)
    run.set_config(recipe.to_dict())
    run.manifest["variants"] = []
    run.save()
    datasets: dict[str, Any] = {}
    outputs: dict[str, Any] = {}

    def data_for(step):
        cfg = step.data or recipe.data
        key = repr(to_dict(cfg))
        if key not in datasets:
            datasets[key] = load_data(cfg)
        return datasets[key]

    def resolve(ref: str, data):
        if ref in outputs:
            return outputs[ref].copy()
        return load_input(ref, data, kwargs=None, trust_code=trust_code, seed=recipe.seed)

    from compress.config import from_dict

    for step in recipe.steps:
        data = data_for(step)
        vdir = run.work / "variants" / step.name
        started = time.perf_counter()
        if vdir.exists():  # finished before an interruption: reuse it
            if "torch" in read_manifest(vdir).get("artifacts", {}):
                outputs[step.name] = load_model(str(vdir))
            _note_variant(run, step.name)
            continue
        vrun = RunDir(vdir, step.technique, resume=vdir.with_name(step.name + ".partial").exists())
        if step.model in outputs:
            model = outputs[step.model].copy()
        else:
            model = load_input(
                step.model,
                data,
                kwargs=step.model_kwargs,
                trust_code=trust_code,
                weights=step.weights,
                weights_map=step.weights_map,
                preprocessing=step.preprocessing or None,
                seed=recipe.seed,  # a fresh architecture's initial weights move with the recipe's seed
            )
        vrun.add_input("model", step.model)
        teacher = resolve(step.teacher, data) if step.teacher else None
        if teacher is not None and not model.preprocessing:
            model.preprocessing = dict(teacher.preprocessing)  # the student learns on the teacher's inputs
        from compress.data import prepare_for_model

        data = prepare_for_model(data, model.preprocessing)
        if step.teacher:
            vrun.add_input("teacher", step.teacher)
        config = recipe.step_configs.get(step.name)
        if config is None:
            from compress.methods import get_method

            config = from_dict(get_method(step.technique, step.method).config, step.params)
        vrun.set_config({"step": to_dict(step), "params": to_dict(config), "data": to_dict(data.config)})
        result = run_technique(step.technique, config, model, data=data, teacher=teacher, workdir=vrun.work / "work")
        write_variant(
            vrun,
            result,
            data=data,
            export_config=recipe.export,
            bench_config=recipe.bench if step.variant else None,
            export=step.variant,
        )
        from compress.bench.fidelity import record_recipe_fidelity

        record_recipe_fidelity(run, recipe, step, vrun, data)  # to the recipe's first variant
        vrun.manifest["metrics"]["wall_s"] = round(time.perf_counter() - started, 2)
        vrun.manifest["variant"] = step.variant
        shutil.rmtree(vrun.work / "work", ignore_errors=True)
        vrun.commit()
        if result.model is not None:
            outputs[step.name] = result.model
        _note_variant(run, step.name)
    report_dir = run.work / "report"
    build_report([run.work], report_dir, baseline=recipe.report.baseline, title=recipe.report.title or recipe.name)
    run.add_artifact("report", "report/report.json")
    run.save()
    return run.commit()


def _note_variant(run: RunDir, name: str) -> None:
    if name not in run.manifest["variants"]:
        run.manifest["variants"].append(name)
        run.save()


def seed_dirs(recipe, out: str | Path, seeds: int) -> list[Path]:
    """Where `run_recipe_seeds` puts each seed's run: out/seed-K for K = recipe.seed, +1, ..."""
    return [Path(out) / f"seed-{recipe.seed + i}" for i in range(seeds)]


def run_recipe_seeds(
    recipe,
    out: str | Path,
    *,
    seeds: int,
    force: bool = False,
    resume: bool = False,
    trust_code: bool = False,
    recipe_path: str | None = None,
    on_seed: Callable[[int, Path, str], None] | None = None,
) -> dict[str, Any]:
    """Run `recipe` at seeds recipe.seed, +1, ... (`seeds` of them), each a whole run in `out/seed-K`,
    then write `out/summary.{json,md}` (`compress.report.seeds`) and return the summary.

    The seed moves every step's initial weights, data order and augmentation; the data split keeps
    `data.seed`, so every seed is scored on the same held-out images. With `resume`, a finished seed
    is kept (once its recorded settings are checked against this recipe's) and an interrupted one
    continues; `force` redoes them all. `on_seed(seed, path, "done" | "kept")` follows progress.
    """
    from compress.recipe import MAX_SEEDS, reseed
    from compress.report.seeds import summarize_seeds, write_summary
    from compress.runs import MANIFEST, RunLock

    if not 1 <= seeds <= MAX_SEEDS:
        raise CompressError(f"--seeds must be between 1 and {MAX_SEEDS}, got {seeds}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CompressError(f"--out {out} is a file; give a directory path")
    if (out / MANIFEST).exists():
        raise CompressError(f"{out} is a single run's directory; give --seeds a new --out folder")
    dirs = seed_dirs(recipe, out, seeds)
    started = [d for d in dirs if d.exists() or d.with_name(d.name + ".partial").exists()]
    if started and not (force or resume):
        raise CompressError(f"{started[0]} exists; pass --resume to finish the other seeds or --force to redo all")
    if resume and not force and not started:
        raise CompressError(f"nothing to resume: no seed runs in {out}")
    lock = RunLock(out)  # one process per seed folder (the same lock a single run at `out` would take)
    lock.acquire(out)
    try:
        for i, path in enumerate(dirs):
            seeded = reseed(recipe, recipe.seed + i)
            if path.exists() and not force:
                _check_same_run(path, seeded)
                status = "kept"
            else:
                partial = path.with_name(path.name + ".partial").exists()
                run_recipe(
                    seeded, path, force=force, resume=resume and partial, trust_code=trust_code, recipe_path=recipe_path
                )
                status = "done"
            if on_seed is not None:
                on_seed(seeded.seed, path, status)
        summary = summarize_seeds(dirs, baseline=recipe.report.baseline, title=recipe.report.title or recipe.name)
        write_summary(summary, out)
    finally:
        lock.release()
    return summary


def _check_same_run(path: Path, recipe) -> None:
    """A finished seed is kept only if it ran this recipe at this seed."""
    from compress.runs import config_difference

    manifest = read_manifest(path)
    changed = config_difference(manifest.get("config"), recipe.to_dict())
    if manifest.get("command") != "run" or changed is not None:
        raise CompressError(
            f"{path} ran other settings ({changed or 'not a recipe run'}); use --force to redo every seed"
        )
