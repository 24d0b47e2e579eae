"""Tiny real ONNX models for the gate tests, exported once per session."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn


def export(module: nn.Module, path, shape=(3, 8, 8)) -> None:
    """TorchScript export (fast) with a dynamic batch axis."""
    module.eval()
    torch.onnx.export(
        module,
        (torch.rand(2, *shape),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
    )


def tiny_cnn(width: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, 10),
    )


def make_24(module: nn.Module) -> nn.Module:
    """Zero the 2 smallest of every 4 input-channel weights of every Conv/Linear with Cin % 4 == 0."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.shape[1] % 4 == 0:
                w = m.weight.movedim(1, -1)
                groups = w.reshape(-1, 4)
                idx = groups.abs().argsort(dim=1)[:, :2]
                groups.scatter_(1, idx, 0.0)
                m.weight.copy_(groups.reshape(w.shape).movedim(-1, 1))
    return module


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("check_models")
    paths = {
        "small": d / "small.onnx",
        "small_copy": d / "small_copy.onnx",
        "wide": d / "wide.onnx",
        "sparse": d / "sparse.onnx",
    }
    export(tiny_cnn(8), paths["small"])
    paths["small_copy"].write_bytes(paths["small"].read_bytes())
    export(tiny_cnn(64), paths["wide"])
    export(make_24(tiny_cnn(8)), paths["sparse"])
    return paths


@pytest.fixture(scope="session")
def digits8():
    from compress.data import DataConfig, load_data

    return load_data(DataConfig(name="digits", image_size=8, limit=96))


def qdq_conv_model(path, *, int8: bool = True, dynamic_hw: bool = False, scale: float = 0.1) -> None:
    """A hand-built graph: input -> Conv whose weight is DequantizeLinear(int8 W) (or plain float W)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.integers(-5, 5, size=(4, 4, 3, 3)).astype(np.int8)
    nodes, inits = [], []
    if int8:
        inits += [
            numpy_helper.from_array(w, "w_q"),
            numpy_helper.from_array(np.array(scale, np.float32), "w_s"),
            numpy_helper.from_array(np.array(0, np.int8), "w_zp"),
        ]
        nodes.append(helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_zp"], ["w"]))
    else:
        inits.append(numpy_helper.from_array(w.astype(np.float32) * 0.1, "w"))
    nodes.append(helper.make_node("Conv", ["input", "w"], ["output"], pads=[1, 1, 1, 1]))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4, "H" if dynamic_hw else 6, 6])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.fixture
def make_qdq():
    return qdq_conv_model


@pytest.fixture
def make_tiny_cnn():
    return tiny_cnn
