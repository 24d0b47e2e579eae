"""ONNX export with a dynamic batch axis, validation, and an ONNX Runtime parity check.

The exporter is `torch.onnx.export(dynamo=True)` (opset >= 18) by default; `auto` falls back to the
TorchScript exporter (opset <= 17) when the dynamo path fails (e.g. fake-quant modules), and the
manifest records which one ran. The written file is checked with `onnx.checker` and shape
inference, then run in ONNX Runtime on seeded random inputs at a batch size other than the export
one (so the dynamic axis is exercised) and compared with the torch model: a failing parity is an
error and nothing is left at the destination.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from compress.errors import BackendError, ModelError
from compress.models.model import Model

INPUT_NAME = "input"
OUTPUT_NAME = "output"


@dataclass
class ExportConfig:
    """How to export and what parity to demand.

    Attributes:
        opset: ONNX opset for the dynamo exporter (the TorchScript fallback caps it at 17).
        exporter: auto (dynamo, then TorchScript on failure), dynamo or torchscript.
        dynamic_batch: make the batch axis dynamic.
        parity_batch: batch size of the parity check inputs.
        atol, rtol: allowed |onnx - torch| <= atol + rtol * max|torch|.
        min_top1_agreement: for classifiers, the share of inputs whose arg-max must agree.
        bake_preprocessing: put the model's mean/std normalisation inside the graph, so the deployed
            model takes plain [0, 1] images. Either way the file's metadata (`compress.preprocessing`)
            says what its inputs need, and `bench`/`check` prepare data by it.
        constant_folding: fold constant subgraphs (TorchScript exporter). Off keeps every initializer
            under its parameter name and a weight computed in forward (codebook indices) in the graph.
    """

    opset: int = 18
    exporter: Literal["auto", "dynamo", "torchscript"] = "auto"
    dynamic_batch: bool = True
    parity_batch: int = 8
    atol: float = 1e-3
    rtol: float = 1e-3
    min_top1_agreement: float = 0.99
    bake_preprocessing: bool = False
    constant_folding: bool = True

    def __post_init__(self) -> None:
        if not 7 <= self.opset <= 23:
            raise ValueError(f"opset must be between 7 and 23, got {self.opset}")
        if self.parity_batch < 1:
            raise ValueError("parity_batch must be at least 1")


def export_onnx(
    model: Model,
    path: str | Path,
    config: ExportConfig | None = None,
    *,
    rewrite: Callable[[Path], None] | None = None,
) -> dict[str, Any]:
    """Export `model` to `path` and check it; returns the export report (exporter, parity, size).

    `rewrite(path)`, if given, edits the exported file in place before the checks (e.g. integer weights
    behind DequantizeLinear); parity is then checked on the rewritten file.
    """
    import torch

    config = config or ExportConfig()
    if not model.input_shape:
        raise ModelError(f"{model.name}: unknown input shape; pass --input-shape C,H,W")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.onnx")
    module = model.module.eval()
    prep = dict(model.preprocessing)
    if config.bake_preprocessing and prep.get("mean"):
        module = _normalized(module, prep["mean"], prep["std"])
        prep["baked"] = True
    example = torch.rand(2, *model.input_shape, generator=torch.Generator().manual_seed(0))
    errors: list[str] = []
    used = None
    order = {"auto": ["dynamo", "torchscript"], "dynamo": ["dynamo"], "torchscript": ["torchscript"]}
    try:
        for exporter in order[config.exporter]:
            try:
                _export(module, example, tmp, exporter, config)
                used = exporter
                break
            except OSError as e:
                if e.errno is not None and e.filename is None:
                    e.filename = str(path)
                raise  # a full disk or a permission problem, not an exporter failure: say so plainly
            except Exception as e:  # exporters raise many types; keep the first line for the message
                errors.append(
                    f"{exporter}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__}"
                )
        if used is None:
            raise ModelError(f"ONNX export of {model.name} failed ({'; '.join(errors)})")
        if rewrite is not None:
            rewrite(tmp)
        _check(tmp)
        if prep:
            _set_metadata(tmp, PREPROCESSING_KEY, json.dumps(prep))
        parity = check_parity(module, tmp, model.input_shape, config, task=model.task)
        if not parity["ok"]:
            raise BackendError(
                f"ONNX parity check failed for {path.name}: max abs diff {parity['max_abs_diff']:.3g} "
                f"(allowed {parity['tolerance']:.3g}), top-1 agreement {parity.get('top1_agreement', 1.0):.3f}"
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        for extra in path.parent.glob(f".{path.stem}.tmp{os.getpid()}.onnx*"):
            extra.unlink(missing_ok=True)
    import onnx

    opset = max(
        (o.version for o in onnx.load(str(path), load_external_data=False).opset_import if o.domain in ("", "ai.onnx")),
        default=None,
    )  # what the file really declares (the dynamo exporter raises a too-low request to 18)
    return {
        "exporter": used,
        "opset": opset,
        "parity": parity,
        "bytes": path.stat().st_size,
        "fallback_reason": errors[0] if errors else None,
    }


PREPROCESSING_KEY = "compress.preprocessing"


def _normalized(net, mean, std):
    """`net` behind (x - mean) / std, for `bake_preprocessing`."""
    import torch

    class Normalize(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

        def forward(self, x):
            return self.net((x - self.mean) / self.std)

    return Normalize().eval()


def _set_metadata(path: Path, key: str, value: str) -> None:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    kept = [p for p in proto.metadata_props if p.key != key]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def read_preprocessing(path: str | Path) -> dict[str, Any]:
    """What an exported file's inputs need (mean/std not yet applied unless `baked`); {} if nothing."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # not our business here: the backend reports unreadable files
        return {}
    for p in proto.metadata_props:
        if p.key == PREPROCESSING_KEY:
            try:
                value = json.loads(p.value)
            except json.JSONDecodeError:
                return {}
            return value if isinstance(value, dict) else {}
    return {}


def _export(module, example, path: Path, exporter: str, config: ExportConfig) -> None:
    import torch

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            dynamic = ({0: torch.export.Dim("batch", min=1, max=4096)},) if config.dynamic_batch else None
            program = torch.onnx.export(
                module,
                (example,),
                None,
                dynamo=True,
                opset_version=max(config.opset, 18),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=dynamic,
                verbose=False,
                external_data=False,
            )
            program.save(str(path))
        else:
            axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if config.dynamic_batch else None
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=False,
                opset_version=min(config.opset, 17),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes=axes,
                do_constant_folding=config.constant_folding,
            )


def _check(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path))
        onnx.shape_inference.infer_shapes_path(str(path), str(path) + ".inferred")
    except Exception as e:  # onnx raises its own ValidationError / InferenceError
        raise BackendError(f"exported ONNX model is invalid: {str(e).splitlines()[0][:300]}") from None
    finally:
        Path(str(path) + ".inferred").unlink(missing_ok=True)


def check_parity(module, onnx_path: Path, input_shape, config: ExportConfig, *, task: str = "classification") -> dict:
    """Compare torch and ONNX Runtime outputs on seeded random inputs."""
    import numpy as np
    import torch

    from compress.backends import get_backend

    batch = config.parity_batch if config.dynamic_batch else 2
    x = torch.rand(batch, *input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = module(x).float().numpy()
    session = get_backend("onnxruntime").load(onnx_path)
    out = session.run(x.numpy())
    diff = float(np.abs(out.astype(np.float64) - ref).max())
    tol = config.atol + config.rtol * float(np.abs(ref).max())
    result: dict[str, Any] = {"max_abs_diff": diff, "tolerance": tol, "samples": batch}
    ok = diff <= tol
    if task == "classification" and ref.ndim == 2:
        agreement = float((out.argmax(1) == ref.argmax(1)).mean())
        result["top1_agreement"] = agreement
        ok = ok and agreement >= config.min_top1_agreement
    result["ok"] = bool(ok)
    return result
