"""What structured pruning can and cannot touch in a model: the `compress info --prunable` report."""

from __future__ import annotations

from typing import Any

from torch import nn

from compress.prune.graph import analyze


def prunable_report(
    model: Any, input_shape: tuple[int, ...] | None = None, *, ignore: list[str] | None = None
) -> dict[str, Any]:
    """Coupled channel groups of `model` (a `Model` or an `nn.Module` with `input_shape`).

    Returns {"rows": [...], "summary": {...}, "opaque_modules": [...], "notes": [...]}; each row is a
    group: name, layers, channels, removable units, status ("prunable" / "kept whole") and the
    reasons why units are kept whole. The model is not changed.
    """
    module = model if isinstance(model, nn.Module) else model.module
    shape = tuple(input_shape or getattr(model, "input_shape", ()) or ())
    if not shape:
        from compress.errors import ModelError

        raise ModelError("the prunable report needs an input shape (--input-shape C,H,W)")
    from compress.prune.exported import prunable_module

    module = prunable_module(module, shape)  # a .pt2 program: the form the pruner analyses
    graph = analyze(module, shape, ignore=ignore)
    report = graph.report()
    rows = []
    for g in report["groups"]:
        layers = g["layers"]
        rows.append(
            {
                "group": g["group"],
                "name": g["name"],
                "layers": len(layers),
                "layer_names": layers[:6] + (["..."] if len(layers) > 6 else []),
                "channels": g["channels"],
                "units": g["units"],
                "prunable_units": g["prunable_units"],
                "status": g["status"],
                "reasons": g["reasons"],
            }
        )
    conv_linear = [n for n, m in module.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]
    in_prunable = {layer for g in report["groups"] if g["prunable_units"] for layer in g["layers"]}
    summary = {
        "groups": report["total_groups"],
        "prunable_groups": report["prunable_groups"],
        "units": int(graph.num_classes),
        "prunable_units": int(len(graph.prunable_classes())),
        "layers": len(conv_linear),
        "layers_with_prunable_outputs": sum(1 for n in conv_linear if n in in_prunable),
    }
    return {"rows": rows, "summary": summary, "opaque_modules": report["opaque_modules"], "notes": report["notes"]}
