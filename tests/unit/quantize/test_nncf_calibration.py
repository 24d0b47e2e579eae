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
