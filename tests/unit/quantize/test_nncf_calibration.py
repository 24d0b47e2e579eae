"""What NNCF is handed to calibrate on: single images, as its range estimators expect."""

from __future__ import annotations

import pytest

pytest.importorskip("nncf")

from compress.methods import Context, get_method
from compress.quantize.int8 import Int8Config


@pytest.mark.parametrize("route", ["onnx", "torch"])
def test_nncf_calibrates_on_single_images_however_the_batches_come(trained, digits, tmp_path, monkeypatch, route):
    import nncf

    seen: list[tuple[int, ...]] = []
    real = nncf.quantize

    def spy(model, dataset, **kw):
        for item in dataset.get_inference_data():
            x = next(iter(item.values())) if isinstance(item, dict) else item
            seen.append(tuple(x.shape))
        return real(model, dataset, **kw)

    monkeypatch.setattr(nncf, "quantize", spy)
    config = Int8Config(route=route, calib_size=40, batch_size=16, speed_check=False)
    get_method("quantize", "int8").fn(trained, config, Context(data=digits, workdir=tmp_path))
    # MEAN_MINMAX averages each item's extremes: batches of 16 would widen every activation range
    assert len(seen) == 40 and {s[0] for s in seen} == {1}


def _input_zero_point(path):
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    q = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == graph.input[0].name)
    return inits[q.input[2]]


def test_onnxruntime_gets_asymmetric_activations_by_default_and_performance_stays_symmetric(tmp_path):
    import torch

    from compress.quantize.nncf_adapter import preset_for, quantize_onnx

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3)).eval()
    float_path = tmp_path / "float.onnx"
    torch.onnx.export(
        net,
        torch.zeros(1, 3, 8, 8),
        str(float_path),
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        dynamic_axes={"input": {0: "n"}},
    )
    calib = [torch.rand(8, 3, 8, 8) * 2.5 - 0.5 for _ in range(2)]  # signed, off-centre: [-0.5, 2]

    def zero_point(config):
        out = tmp_path / f"{config.preset}.onnx"
        quantize_onnx(float_path, out, calib, config, [])
        return preset_for(config), _input_zero_point(out)

    preset, zp = zero_point(Int8Config())
    # asymmetric uint8 over about [-0.5, 2]: zero-point near 0.5 / 2.5 * 255, not the symmetric 128
    assert preset == "mixed" and zp.dtype.name == "uint8" and 30 < int(zp) < 70, zp
    preset, zp = zero_point(Int8Config(preset="performance"))
    assert preset == "performance" and int(zp) == 128
    assert preset_for(Int8Config(target="tensorrt")) == "performance"
