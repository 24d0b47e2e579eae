"""`compare`'s tolerance rule: relative error against A in both paths (ours and Polygraphy's), NaNs fail."""

import numpy as np
import pytest
from conftest import small_onnx


def _halved(src, dst):
    """The same model with its classifier weights halved: every logit of B is exactly half of A's."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    for i, init in enumerate(model.graph.initializer):
        if init.name == "fc":
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 0.5, "fc"))
    onnx.save(model, str(dst))
    return dst


@pytest.mark.parametrize("rtol, passes", [(0.7, True), (0.4, False)])
def test_relative_error_is_against_a_in_both_paths(tmp_path, rtol, passes):
    """|a - b| / |a| = 0.5 everywhere, but |a - b| / |b| = 1.0: a verdict taken against B would fail rtol 0.7."""
    pytest.importorskip("polygraphy")
    from compress.compare import CompareConfig, compare, compare_polygraphy

    a = small_onnx(tmp_path / "a.onnx")
    b = _halved(a, tmp_path / "b.onnx")
    cfg = CompareConfig(atol=0.0, rtol=rtol, samples=6, batch_size=3, input_shape=(3, 8, 8))
    ours = compare(a, b, cfg)
    (stats,) = ours["outputs"].values()
    assert stats["rel"]["max"] == pytest.approx(0.5) and stats["rel"]["median"] == pytest.approx(0.5)
    theirs = compare_polygraphy(a, b, cfg)
    assert ours["passed"] is passes and theirs["passed"] is passes
    assert [o["passed"] for o in theirs["outputs"].values()] == [passes]


def test_nan_fails_equal_infinities_pass():
    from compress.compare import output_stats

    nan, inf = float("nan"), float("inf")
    both_nan = output_stats(np.array([[nan, 1.0]]), np.array([[nan, 1.0]]), 1e-3, 1e-3)
    assert not both_nan["passed"] and both_nan["failed_elements"] == 1 and both_nan["nonfinite_mismatch"] == 1
    same_inf = output_stats(np.array([[inf, -inf]]), np.array([[inf, -inf]]), 1e-3, 1e-3)
    assert same_inf["passed"] and same_inf["nonfinite_mismatch"] == 0
    flipped = output_stats(np.array([[inf, 2.0]]), np.array([[-inf, 2.0]]), 1e-3, 1e-3)
    assert not flipped["passed"] and flipped["failed_elements"] == 1
    finite_vs_inf = output_stats(np.array([[1.0, 2.0]]), np.array([[inf, 2.0]]), 1e-3, 1e-3)
    assert not finite_vs_inf["passed"] and finite_vs_inf["failed_elements"] == 1
