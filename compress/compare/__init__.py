"""The same inputs through two artifacts or two backends: what differs in what they compute.

Per output: absolute and relative error statistics (max, mean, median, p99), and for classifiers
the top-1 agreement; PASS when every output is within tolerance. The tolerance rule is Polygraphy's
`CompareFunc.simple` (the one `polygraphy run --trt --onnxrt` applies): an element fails only when
it is off by more than `atol` **and** by more than `rtol` relative to the reference (A), so tiny
values and large ones are both judged fairly. Relative error = |a - b| / |a|, A being the
reference, with zeros of A replaced by a tiny epsilon as Polygraphy does. A NaN on either side
fails (Polygraphy's rule too), as does a non-finite value the other side does not match; equal
infinities pass (Polygraphy's `infinities_compare_equal`). Polygraphy divides by the *second*
output of a comparison, so `compare_polygraphy` hands it the pair as (B, A).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compress.errors import BackendError, DataError

_EPSILON = 2.220446049250313e-16  # what Polygraphy adds to zeros of the reference


@dataclass
class CompareConfig:
    """How to compare.

    Attributes:
        backends: the backend of A and of B (onnxruntime, torch, torch-cuda, tensorrt).
        device: device for backends that have a choice (onnxruntime, torch).
        atol, rtol: an element fails when |a - b| > atol and |a - b| / |a| > rtol.
        batch_size: inputs per call.
        samples: number of random inputs (without data).
        input_shape: one sample's shape (C,H,W) for random inputs where the model's is dynamic.
        seed: the random inputs depend on it.
        min_top1_agreement: for outputs of shape [batch, classes], the share of samples whose arg-max
            must agree (None: reported, not gated).
    """

    backends: tuple[str, str] = ("onnxruntime", "onnxruntime")
    device: str = "cpu"
    atol: float = 1e-3
    rtol: float = 1e-3
    batch_size: int = 8
    samples: int = 32
    input_shape: tuple[int, ...] | None = None
    seed: int = 0
    min_top1_agreement: float | None = None

    def validate(self) -> None:
        if self.atol < 0 or self.rtol < 0:
            raise DataError("--atol and --rtol must be non-negative")
        if self.batch_size < 1 or self.samples < 1:
            raise DataError("--batch-size and --samples must be at least 1")
        if self.min_top1_agreement is not None and not 0 <= self.min_top1_agreement <= 1:
            raise DataError("--min-top1-agreement must lie in [0, 1]")


def load_session(path: str | Path, backend: str, device: str = "cpu"):
    """A session of `backend` on the artifact at `path` (a file or a run directory)."""
    from compress.backends import artifact_role, get_backend
    from compress.backends.base import BackendOptions
    from compress.models.sources import resolve_model_path

    role = artifact_role(backend)
    file = resolve_model_path(str(path), role)
    if not file.is_file():
        raise BackendError(f"model file not found: {file}")
    if backend in ("torch-cuda", "tensorrt"):
        device = "cuda"
    return get_backend(backend).load(file, BackendOptions(device=device)), file


def batches(session, config: CompareConfig, data: Any = None):
    """The inputs: the data's validation split, or seeded random ones of the model's (or the given) shape."""
    if data is not None:
        import torch

        loader = torch.utils.data.DataLoader(data.val, batch_size=config.batch_size, shuffle=False)
        for x, _ in loader:
            yield x.numpy()
        return
    shape = list(session.input_shape[1:])
    if config.input_shape is not None:
        shape = list(config.input_shape)
        if len(shape) != len(session.input_shape) - 1:
            raise DataError(f"--input-shape {shape} does not fit the model's input {session.input_shape}")
    if any(not isinstance(d, int) or d <= 0 for d in shape):
        raise DataError(f"the model's input {session.input_shape} is dynamic; pass --input-shape or --data")
    rng = np.random.default_rng(config.seed)
    left = config.samples
    while left > 0:
        n = min(config.batch_size, left)
        yield rng.random([n, *shape], dtype=np.float32)
        left -= n


def compare(a: str | Path, b: str | Path, config: CompareConfig | None = None, *, data: Any = None) -> dict[str, Any]:
    """Run the same inputs through A and B and compare every output; `result["passed"]` is the verdict."""
    config = config or CompareConfig()
    config.validate()
    sa, fa = load_session(a, config.backends[0], config.device)
    sb, fb = load_session(b, config.backends[1], config.device)
    outs_a: dict[str, list[np.ndarray]] = {}
    outs_b: dict[str, list[np.ndarray]] = {}
    n = 0
    for x in batches(sa, config, data):
        ra = sa.run_all(x.astype(sa.input_dtype))
        rb = sb.run_all(x.astype(sb.input_dtype))
        if len(ra) != len(rb):
            raise BackendError(f"A has {len(ra)} outputs and B has {len(rb)}; they cannot be compared")
        for (ka, va), (_, vb) in zip(ra.items(), rb.items(), strict=True):  # outputs matched by position
            if va.shape != vb.shape:
                raise BackendError(f"output '{ka}': A gives shape {va.shape}, B gives {vb.shape}")
            outs_a.setdefault(ka, []).append(np.asarray(va, dtype=np.float64))
            outs_b.setdefault(ka, []).append(np.asarray(vb, dtype=np.float64))
        n += len(x)
    if n == 0:
        raise DataError("no inputs to compare (the data's validation split is empty)")
    outputs = {}
    for name in outs_a:
        outputs[name] = output_stats(
            np.concatenate(outs_a[name]), np.concatenate(outs_b[name]), config.atol, config.rtol
        )
    passed = all(o["passed"] for o in outputs.values())
    if config.min_top1_agreement is not None:
        for o in outputs.values():
            if "top1_agreement" in o and o["top1_agreement"] < config.min_top1_agreement:
                o["passed"] = passed = False
    return {
        "a": {"path": str(fa), "backend": config.backends[0], "runtime": sa.info()},
        "b": {"path": str(fb), "backend": config.backends[1], "runtime": sb.info()},
        "inputs": {"source": "data" if data is not None else "random", "samples": n, "seed": config.seed},
        "tolerance": {"atol": config.atol, "rtol": config.rtol, "min_top1_agreement": config.min_top1_agreement},
        "outputs": outputs,
        "passed": passed,
    }


def compare_polygraphy(
    a: str | Path, b: str | Path, config: CompareConfig | None = None, *, data: Any = None
) -> dict[str, Any]:
    """The same comparison run by Polygraphy's `Comparator` (`OnnxrtRunner` on the CPU, `TrtRunner` for
    engines): its runners compute the outputs and `Comparator.compare_accuracy` with
    `CompareFunc.simple(atol, rtol)` gives the verdict; the statistics are ours, from its outputs."""
    from compress.backends.tensorrt import require_polygraphy

    config = config or CompareConfig()
    config.validate()
    require_polygraphy()
    from polygraphy.comparator import Comparator, CompareFunc

    from compress.backends.tensorrt import quiet_polygraphy

    sa, fa = load_session(a, config.backends[0], config.device)
    runners = [
        _pg_runner(fa, config.backends[0], "A"),
        _pg_runner(_artifact(b, config.backends[1]), config.backends[1], "B"),
    ]
    feeds = [{sa.input_name: x.astype(sa.input_dtype)} for x in batches(sa, config, data)]
    if not feeds:
        raise DataError("no inputs to compare (the data's validation split is empty)")
    with quiet_polygraphy():
        results = Comparator.run(runners, data_loader=feeds)
        verdict = Comparator.compare_accuracy(  # (B, A): Polygraphy's relative error divides by |A|
            results, comparisons=[(1, 0)], compare_func=CompareFunc.simple(atol=config.atol, rtol=config.rtol)
        )
    (_, iters_a), (_, iters_b) = results
    names = list(iters_a[0].keys())
    # Polygraphy >= 0.53 returns one AccuracyResult per compare function in a list; older, the result itself
    accuracy = verdict if hasattr(verdict, "values") else verdict[0]
    per_pair = next(iter(accuracy.values()))
    outputs = {}
    for name in names:
        va = np.concatenate([np.asarray(it[name], dtype=np.float64) for it in iters_a])
        vb = np.concatenate([np.asarray(it[name], dtype=np.float64) for it in iters_b])
        outputs[name] = output_stats(va, vb, config.atol, config.rtol)
        per_iter = [bool(cmp[name]) for cmp in per_pair if name in cmp]
        outputs[name]["passed"] = all(per_iter)  # Polygraphy's verdict
    passed = bool(verdict)
    if config.min_top1_agreement is not None:
        for o in outputs.values():
            if "top1_agreement" in o and o["top1_agreement"] < config.min_top1_agreement:
                o["passed"] = passed = False
    return {
        "a": {"path": str(fa), "backend": config.backends[0], "runner": runners[0].name},
        "b": {"path": str(_artifact(b, config.backends[1])), "backend": config.backends[1], "runner": runners[1].name},
        "inputs": {
            "source": "data" if data is not None else "random",
            "samples": sum(len(next(iter(f.values()))) for f in feeds),
            "seed": config.seed,
        },
        "tolerance": {"atol": config.atol, "rtol": config.rtol, "min_top1_agreement": config.min_top1_agreement},
        "via": "polygraphy Comparator",
        "outputs": outputs,
        "passed": passed,
    }


def _artifact(path: str | Path, backend: str) -> Path:
    from compress.backends import artifact_role
    from compress.models.sources import resolve_model_path

    return resolve_model_path(str(path), artifact_role(backend))


def _pg_runner(path: Path, backend: str, name: str):
    """Polygraphy's runner for an ONNX Runtime model (CPU provider) or a TensorRT engine."""
    if backend == "onnxruntime":
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

        return OnnxrtRunner(SessionFromOnnx(BytesFromPath(str(path)), providers=["CPUExecutionProvider"]), name=name)
    if backend == "tensorrt":
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        from compress.backends.tensorrt import require_tensorrt

        require_tensorrt()
        return TrtRunner(EngineFromBytes(BytesFromPath(str(path))), name=name)
    raise BackendError(f"Polygraphy's Comparator runs onnxruntime and tensorrt, not '{backend}'; use --via compress")


def output_stats(a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> dict[str, Any]:
    """Error statistics of B against the reference A, and the elementwise tolerance verdict."""
    with np.errstate(invalid="ignore"):  # inf - inf is NaN: judged below
        absdiff = np.abs(a - b)
        denom = np.abs(a)
        denom[denom == 0] = _EPSILON
        reldiff = absdiff / denom
    # NaN anywhere, or a non-finite value the other side does not equal (inf vs -inf, inf vs finite)
    nonfinite_mismatch = (~np.isfinite(a) | ~np.isfinite(b)) & ~(a == b)
    nonfinite = int(nonfinite_mismatch.sum())
    with np.errstate(invalid="ignore"):
        failed = (absdiff > atol) & (reldiff > rtol)
    failed |= nonfinite_mismatch
    out: dict[str, Any] = {
        "shape": list(a.shape),
        "abs": _stats(absdiff),
        "rel": _stats(reldiff),
        "failed_elements": int(failed.sum()),
        "failed_share": float(failed.mean()) if failed.size else 0.0,
        "nonfinite_mismatch": nonfinite,
        "passed": not bool(failed.any()),
    }
    if a.ndim == 2 and a.shape[1] > 1:
        out["top1_agreement"] = float((a.argmax(1) == b.argmax(1)).mean())
    return out


def _stats(v: np.ndarray) -> dict[str, float]:
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"max": 0.0, "mean": 0.0, "median": 0.0, "p99": 0.0}
    return {
        "max": float(v.max()),
        "mean": float(v.mean()),
        "median": float(np.median(v)),
        "p99": float(np.percentile(v, 99)),
    }


__all__ = ["CompareConfig", "compare", "compare_polygraphy", "output_stats"]
