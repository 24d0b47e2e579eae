"""Fidelity of a model to a reference model: how closely its outputs follow the reference's on the
same inputs. It needs no labels, so it is the metric on `images:` data, and it says what an
accuracy figure hides (two models at 70% can disagree on a third of the images).

Classifiers (outputs [N, K] logits):
  * `top1_agreement`: share of inputs whose top-1 class is the reference's top-1 class;
  * `top5_agreement`: share of inputs whose top-5 classes hold the reference's top-1 class (top-5
    accuracy with the reference's predictions as the labels);
  * `kl_divergence`: mean KL(softmax(reference) || softmax(model)) in nats.
Dense tasks (outputs are images): `psnr`, the mean per-image PSNR (dB) of the model's output against
the reference's output, both clipped to [0, 1] (100 dB for identical outputs), and its `mse`.

The pure functions work on numpy arrays; `Fidelity` accumulates them over batches; `load_reference`
opens a reference (an .onnx file, a run directory, or a PyTorch model spec) and `measure_fidelity`
runs a model and a reference over a dataset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compress.errors import CompressError, DataError

CLASSIFICATION = ("top1_agreement", "top5_agreement", "kl_divergence")
DENSE = ("psnr", "mse")
MAX_PSNR = 100.0  # identical outputs: per-image MSE floored at 1e-10


def _logits(outputs: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out, ref = np.asarray(outputs, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if out.ndim != 2 or out.shape != ref.shape:
        raise DataError(
            f"the outputs {list(out.shape)} and the reference's {list(ref.shape)} are not comparable class scores; "
            "is the reference the same kind of model, for the same classes?"
        )
    return out, ref


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def top1_agreement(outputs: np.ndarray, reference: np.ndarray) -> float:
    """Share of rows whose arg-max matches the reference's."""
    out, ref = _logits(outputs, reference)
    return float((out.argmax(1) == ref.argmax(1)).mean()) if len(out) else float("nan")


def top5_agreement(outputs: np.ndarray, reference: np.ndarray) -> float:
    """Share of rows whose top-5 (top-K when K < 5) holds the reference's arg-max."""
    out, ref = _logits(outputs, reference)
    if not len(out):
        return float("nan")
    k = min(5, out.shape[1])
    top = np.argpartition(-out, k - 1, axis=1)[:, :k]
    return float((top == ref.argmax(1)[:, None]).any(1).mean())


def kl_divergence(outputs: np.ndarray, reference: np.ndarray) -> float:
    """Mean KL(softmax(reference) || softmax(outputs)) per row, in nats."""
    out, ref = _logits(outputs, reference)
    if not len(out):
        return float("nan")
    log_p, log_q = _log_softmax(ref), _log_softmax(out)
    return float(np.maximum((np.exp(log_p) * (log_p - log_q)).sum(1), 0.0).mean())


def output_psnr(outputs: np.ndarray, reference: np.ndarray) -> float:
    """Mean per-image PSNR (dB) of `outputs` against `reference`, both clipped to [0, 1]."""
    return float(_per_image_psnr(outputs, reference)[0].mean())


def _per_image_psnr(outputs: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = np.clip(np.asarray(outputs, dtype=np.float64), 0.0, 1.0)
    ref = np.clip(np.asarray(reference, dtype=np.float64), 0.0, 1.0)
    if out.shape != ref.shape or out.ndim < 2:
        raise DataError(
            f"the outputs {list(out.shape)} and the reference's {list(ref.shape)} are not images of one shape; "
            "is the reference the same kind of model?"
        )
    mse = np.maximum(((out - ref) ** 2).reshape(len(out), -1).mean(1), 1e-10)
    return 10.0 * np.log10(1.0 / mse), mse


class Fidelity:
    """Accumulates fidelity figures over batches of (outputs, reference outputs)."""

    def __init__(self, task: str) -> None:
        if task not in ("classification", "denoising"):
            raise DataError(f"fidelity is defined for classification and denoising, not '{task}'")
        self.task = task
        self.n = 0
        self.sums = dict.fromkeys(CLASSIFICATION if task == "classification" else DENSE, 0.0)

    def update(self, outputs: np.ndarray, reference: np.ndarray) -> None:
        n = len(outputs)
        if n == 0:
            return
        if self.task == "classification":
            figures = {
                "top1_agreement": top1_agreement(outputs, reference),
                "top5_agreement": top5_agreement(outputs, reference),
                "kl_divergence": kl_divergence(outputs, reference),
            }
        else:
            psnr, mse = _per_image_psnr(outputs, reference)
            figures = {"psnr": float(psnr.mean()), "mse": float(mse.mean())}
        for k, v in figures.items():
            self.sums[k] += v * n
        self.n += n

    def compute(self) -> dict[str, Any]:
        if self.n == 0:
            raise DataError("fidelity: the evaluation split is empty")
        return {**{k: v / self.n for k, v in self.sums.items()}, "samples": self.n}


# --- running models --------------------------------------------------------------------------------

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass
class Reference:
    """A model to compare against: its name, what it is, and a batch -> outputs function."""

    name: str
    kind: str  # "onnx" (through the backend) or "torch"
    run: Runner


def session_runner(session) -> Runner:
    """A backend session as a batch function of any batch size (a fixed batch dimension is padded)."""
    fixed = session.input_shape[0] if session.input_shape else None
    fixed = fixed if isinstance(fixed, int) and fixed > 0 else None

    def run(x: np.ndarray) -> np.ndarray:
        x = x.astype(session.input_dtype, copy=False)
        if fixed is None or len(x) == fixed:
            return np.asarray(session.run(x))
        parts = []
        for i in range(0, len(x), fixed):
            chunk = x[i : i + fixed]
            pad = fixed - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
            parts.append(np.asarray(session.run(chunk))[: fixed - pad])
        return np.concatenate(parts)

    return run


def torch_runner(module) -> Runner:
    """A torch module (put in eval mode) as a batch function on the CPU."""
    import torch

    module = module.eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.float().cpu().numpy()

    return run


def load_reference(
    spec: str,
    data: Any = None,
    *,
    backend: str = "onnxruntime",
    device: str = "cpu",
    threads: int = 0,
    weights: str | Path | None = None,
    weights_map: str = "names",
    trust_code: bool = False,
) -> Reference:
    """Open `spec` as a reference: an .onnx file or a run directory's onnx artifact runs through the
    backend; a run directory without one, a checkpoint, a .pt2 or an architecture spec (with `weights`)
    runs in PyTorch."""
    path = Path(spec)
    onnx_path = None
    if path.is_file() and path.suffix == ".onnx":
        onnx_path = path
    elif path.is_dir() and weights is None:
        from compress.runs import read_manifest

        if "onnx" in (read_manifest(path).get("artifacts") or {}):
            from compress.runs import artifact_path

            onnx_path = artifact_path(path, "onnx")
    if onnx_path is not None:
        if weights is not None:
            raise CompressError(f"--weights goes with a PyTorch reference, not with the ONNX file {spec}")
        from compress.backends import get_backend
        from compress.backends.base import BackendOptions

        session = get_backend(backend).load(onnx_path, BackendOptions(device, threads))
        return Reference(str(spec), "onnx", session_runner(session))
    from compress.models.sources import load_model

    shape = tuple(data.input_shape) if data is not None else None
    kwargs: dict[str, Any] = {"input_shape": shape, "trust_code": trust_code}
    if shape is not None:
        kwargs["in_channels"] = shape[0]
    if weights is not None:
        kwargs.update(weights=weights, weights_map=weights_map)
    model = load_model(spec, **kwargs)
    if data is not None and model.task != data.task:
        raise DataError(f"the reference {spec} is a {model.task} model but the data is for {data.task}")
    return Reference(str(spec), "torch", torch_runner(model.module))


def measure_fidelity(
    run: Runner, reference: Reference | Runner, dataset, task: str, *, batch_size: int = 64
) -> dict[str, Any]:
    """Fidelity of `run` to `reference` over every sample of `dataset` (its inputs only; labels unused)."""
    import torch

    ref_run = reference.run if isinstance(reference, Reference) else reference
    fid = Fidelity(task)
    loader = torch.utils.data.DataLoader(dataset, batch_size=max(1, batch_size), shuffle=False)
    for batch in loader:
        x = (batch[0] if isinstance(batch, (tuple, list)) else batch).numpy()
        fid.update(run(x), ref_run(x))
    result = fid.compute()
    if isinstance(reference, Reference):
        result = {"reference": reference.name, "reference_kind": reference.kind, **result}
    return {"task": task, **result}


def primary(fidelity: dict[str, Any] | None) -> tuple[str, float] | None:
    """The figure a report leads with: top-1 agreement for classifiers, PSNR for dense tasks."""
    if not isinstance(fidelity, dict):
        return None
    for key in ("top1_agreement", "psnr"):
        if isinstance(fidelity.get(key), (int, float)):
            return key, float(fidelity[key])
    return None


def record_recipe_fidelity(run, recipe, step, vrun, data) -> None:
    """A recipe variant's fidelity to the recipe's first variant, into the variant's metrics.

    Called once per step after its benchmark; a no-op for intermediate steps, without ONNX, with
    `bench.fidelity: false`, or when the two models take different inputs (noted in the metrics)."""
    if not step.variant or not getattr(recipe.bench, "fidelity", True):
        return
    if "onnx" not in vrun.manifest.get("artifacts", {}) or data.task not in ("classification", "denoising"):
        return
    first = next(s.name for s in recipe.steps if s.variant)
    ref_path = vrun.work / "model.onnx" if step.name == first else run.work / "variants" / first / "model.onnx"
    if not ref_path.is_file():
        return
    from compress.backends import artifact_role, get_backend
    from compress.backends.base import BackendOptions

    cfg = recipe.bench
    onnx = artifact_role(cfg.backend) == "onnx"  # both ONNX files: through ONNX Runtime if bench is torch
    backend = get_backend(cfg.backend if onnx else "onnxruntime")
    options = BackendOptions(cfg.device if onnx else "cpu", cfg.threads)
    reference = Reference(first, "onnx", session_runner(backend.load(ref_path, options)))
    model = session_runner(backend.load(vrun.work / "model.onnx", options))
    try:
        figures = measure_fidelity(model, reference, data.val, data.task, batch_size=cfg.eval_batch_size)
    except CompressError as e:
        figures = {"reference": first, "skipped": str(e)}
    vrun.update_metrics({"fidelity": figures})
    vrun.save()
