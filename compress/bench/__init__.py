"""Measure a deployed model: latency and task metrics, both through the runtime backend."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from compress.bench.latency import LatencyConfig, measure, summarize
from compress.errors import BackendError, DataError, RecipeError

GPU_BACKENDS = ("torch-cuda", "tensorrt")  # run on cuda whatever the section's device says


@dataclass
class BackendTarget:
    """One entry of a recipe's `bench.backends`: a backend and the options it sets differently from
    the bench section's own (unset: the section's value). A plain name is short for `{backend: NAME}`.

    Attributes:
        backend: onnxruntime, torch or torch-cuda (a recipe builds no TensorRT engine).
        device: cpu or cuda (torch-cuda: cuda).
        threads, compile, cuda_graph, provider, precision, sparse: as in `BenchConfig`.
    """

    backend: str
    device: str | None = None
    threads: int | None = None
    compile: bool | None = None
    cuda_graph: bool | None = None
    provider: str | None = None
    precision: Literal["fp32", "fp16"] | None = None
    sparse: Literal["off", "all", "auto"] | None = None


@dataclass
class BenchConfig:
    """What to measure and how.

    Attributes:
        backend: runtime backend (onnxruntime, torch).
        device: cpu or cuda.
        threads: intra-op threads (0: one per physical core).
        batch_size: batch size of the latency measurement.
        latency: warm-up and measurement lengths.
        accuracy: also evaluate the task metric on the validation split through the backend.
        eval_batch_size: batch size for that evaluation.
        seed: the random latency inputs depend on it.
        fidelity: in a recipe, also measure each variant's fidelity to the recipe's first variant
            (`compress.bench.fidelity`: top-1/top-5 agreement and KL, or PSNR for dense tasks).
        compile, cuda_graph, provider, precision, sparse: GPU backend options
            (`compress.backends.base.BackendOptions`).
        backends: in a recipe, bench every variant on each of these (`BackendTarget`) instead of on
            `backend` alone; the first is the primary figure (`latency`, speedups, Pareto front), every
            one is recorded in the variant's `metrics.benches` and gets its own report column.
    """

    backend: str = "onnxruntime"
    device: str = "cpu"
    threads: int = 0
    batch_size: int = 1
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    accuracy: bool = True
    eval_batch_size: int = 64
    seed: int = 0
    fidelity: bool = True
    compile: bool = False
    cuda_graph: bool = False
    provider: str = ""
    precision: Literal["fp32", "fp16"] = "fp32"
    sparse: Literal["off", "all", "auto"] = "off"
    backends: list[BackendTarget] = field(default_factory=list)

    def targets(self) -> list[BenchConfig]:
        """One config per backend to bench, the primary first: this one alone without `backends`."""
        if not self.backends:
            return [self]
        out = []
        for t in self.backends:
            changes = {k: v for k, v in dataclasses.asdict(t).items() if v is not None}
            if t.backend in GPU_BACKENDS and t.device is None:
                changes["device"] = "cuda"
            out.append(dataclasses.replace(self, backends=[], **changes))
        return out

    def label(self) -> str:
        """Where a figure comes from, for report headers: backend/device and the options that change it."""
        extra = [self.precision] if self.precision != "fp32" else []
        extra += ["compile"] * self.compile + ["cuda graph"] * self.cuda_graph
        extra += [f"provider {self.provider}"] if self.provider else []
        extra += [f"sparse {self.sparse}"] if self.sparse != "off" else []
        return f"{self.backend}/{self.device}" + "".join(f" {e}" for e in extra)


def check_backends(config: BenchConfig, *, where: str = "bench") -> None:
    """Refuse, in one line naming the entry, a recipe bench section that could not run anywhere: an
    unknown backend or device, a TensorRT engine (a recipe builds none), options of another backend,
    two entries that would give the same column."""
    from compress.backends import BACKENDS, artifact_role

    seen: dict[str, int] = {}
    for i, cfg in enumerate(config.targets()):
        at = f"{where}.backends[{i}]" if config.backends else f"{where}.backend"
        try:
            role = artifact_role(cfg.backend)
        except BackendError as e:
            raise RecipeError(f"{at}: {e}") from None
        if role == "engine":
            raise RecipeError(
                f"{at}: {cfg.backend} runs a built engine, which a recipe does not make; "
                f"use `compress build` then `compress bench --backend {cfg.backend}`; available here: "
                + ", ".join(n for n in BACKENDS.names() if artifact_role(n) != "engine")
            )
        try:
            check_config(cfg)
        except DataError as e:
            raise RecipeError(f"{at}: {e}") from None
        label = cfg.label()
        if label in seen:
            raise RecipeError(f"{at}: the same backend and options as backends[{seen[label]}] ({label})")
        seen[label] = i


def check_machine(config: BenchConfig, *, where: str = "bench") -> None:
    """Refuse, before anything runs, a backend this machine cannot run (a CUDA one without a GPU, an
    ONNX Runtime provider that is not installed), so a run never stops midway on its bench."""
    for i, cfg in enumerate(config.targets()):
        at = f"{where}.backends[{i}]" if config.backends else f"{where}.backend"
        if cfg.device != "cuda":
            continue
        try:
            if cfg.backend == "onnxruntime":
                import onnxruntime as ort

                first = "TensorrtExecutionProvider" if cfg.provider == "tensorrt" else "CUDAExecutionProvider"
                if first not in ort.get_available_providers():
                    raise BackendError(f"ONNX Runtime has no {first} here; install onnxruntime-gpu or use device cpu")
            else:
                from compress.backends.cuda import require_cuda

                require_cuda(f"{cfg.backend} on {cfg.device}")
        except BackendError as e:
            raise BackendError(f"{at}: {e}") from None


def check_config(config: BenchConfig) -> None:
    """The checks `bench` makes before loading anything."""
    if config.batch_size < 1 or config.eval_batch_size < 1:
        raise DataError("batch sizes must be at least 1")
    if config.device not in ("cpu", "cuda"):
        raise DataError(f"unknown device '{config.device}'; available: cpu, cuda")
    if config.sparse != "off" and config.backend != "torch-cuda":
        raise DataError(f"--sparse {config.sparse} runs on --backend torch-cuda, not {config.backend}")


def bench(
    path: str | Path, config: BenchConfig | None = None, *, data: Any = None, reference: Any = None
) -> dict[str, Any]:
    """Latency (and, with `data`, task metrics) of the model file at `path` through the backend.

    With `reference` (a `fidelity.Reference`, or a spec `fidelity.load_reference` opens) and `data`,
    also its fidelity to that model on the validation split (`result["fidelity"]`). Data without
    labels (`images:`) gives no task metrics: fidelity is the figure there."""
    from compress.backends import get_backend
    from compress.backends.base import BackendOptions

    config = config or BenchConfig()
    check_config(config)
    options = BackendOptions(
        config.device,
        config.threads,
        compile=config.compile,
        cuda_graph=config.cuda_graph,
        provider=config.provider,
        precision=config.precision,
        sparse=config.sparse,
    )
    session = get_backend(config.backend).load(path, options)
    shape = session.input_shape
    if data is not None:
        want = [config.batch_size, *data.input_shape]
        for have, need in zip(shape[1:], data.input_shape, strict=False):
            if isinstance(have, int) and have > 0 and have != need:
                raise DataError(
                    f"{Path(path).name} expects inputs {shape[1:]} but the data gives {list(data.input_shape)}; "
                    "set the data's image_size/channels to match"
                )
    else:
        if any(not isinstance(d, int) or d <= 0 for d in shape[1:]):
            raise DataError(f"{Path(path).name} has a dynamic input shape {shape}; pass --data to fix it")
        want = [config.batch_size, *shape[1:]]
    rng = np.random.default_rng(config.seed)
    x = rng.random(want, dtype=np.float32).astype(session.input_dtype)
    timer = session.timer()  # the backend's clock: CUDA events on the GPU backends
    times = measure(session.runner(x), config.latency, timer=timer)
    result: dict[str, Any] = {"latency": summarize(times, config.batch_size), "runtime": session.info()}
    result["runtime"].setdefault("timer", timer.name)
    for name, series in timer.series().items():  # e.g. the host's wait for each call beside GPU compute
        result[f"latency_{name}"] = summarize(series, config.batch_size)
    if getattr(timer, "name", "perf_counter") != "perf_counter":
        # the device clock timed device-resident buffers; an application's call also copies host arrays in and out
        run = session.run
        result["latency_end_to_end"] = summarize(measure(lambda: run(x), config.latency), config.batch_size)
    if data is not None and config.accuracy and getattr(data, "labelled", True):
        result["metrics"] = evaluate_session(session, data.val, data.task, config.eval_batch_size)
    if reference is not None:
        if data is None:
            raise DataError("fidelity to a reference needs --data: both models run on its validation split")
        from compress.bench.fidelity import Reference, load_reference, measure_fidelity, session_runner

        if not isinstance(reference, Reference):
            reference = load_reference(str(reference), data, backend=config.backend, device=config.device)
        result["fidelity"] = measure_fidelity(
            session_runner(session), reference, data.val, data.task, batch_size=config.eval_batch_size
        )
    return result


def evaluate_session(session, dataset, task: str, batch_size: int = 64) -> dict[str, float]:
    """The task metric computed from the deployed model's outputs."""
    import torch

    from compress.tasks import get_task

    metric = get_task(task).metric()
    fixed = session.input_shape[0]
    if isinstance(fixed, int) and fixed > 0:
        batch_size = fixed
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=bool(fixed))
    for x, y in loader:
        out = session.run(x.numpy().astype(session.input_dtype))
        metric.update(out, y)
    return metric.compute()


__all__ = [
    "BackendTarget",
    "BenchConfig",
    "check_backends",
    "check_machine",
    "check_config",
    "LatencyConfig",
    "bench",
    "evaluate_session",
    "measure",
    "summarize",
]
