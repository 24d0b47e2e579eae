"""benchmarks/gpu_backends.py builds every torch-cuda row's backend options before any GPU work, so a
stale option (it once passed `semi_structured=`, which BackendOptions no longer has, and every row
failed on the GPU) shows up here on a CPU."""

import importlib.util
from pathlib import Path

BENCH = Path(__file__).parents[3] / "benchmarks" / "gpu_backends.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_backends_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_torch_plan_rows_are_valid_backend_options():
    from compress.backends.base import BackendOptions

    bench = _load()
    built = {
        "dense": {"pt": "dense.pt", "model": None},
        "sparse_2of4": {"pt": "sparse.pt", "model": None},
        "int8_fake_quant": {"pt": None, "model": object()},  # benchmarked in memory
        "pruned": {"error": "ValueError: no channels"},
    }
    plan = bench.torch_plan(built, [1, 32])
    assert plan and all(isinstance(r["options"], BackendOptions) for r in plan)
    assert {r["variant"] for r in plan} == {"dense", "sparse_2of4", "int8_fake_quant"}
    sparse = [r for r in plan if r["options"].sparse != "off"]
    assert sparse and all(
        r["variant"] == "sparse_2of4" and r["options"].precision == "fp16" and r["options"].sparse == "all"
        for r in sparse
    )
    assert len(sparse) == 2 and all(r["mode"].endswith("+ 2:4 Linear") for r in sparse)  # one per batch
    compiled = [r for r in plan if r["options"].compile]
    assert [(r["variant"], r["batch"]) for r in compiled] == [("dense", 32)]
    assert not [r for r in plan if r["variant"] == "int8_fake_quant" and r["options"].precision == "fp16"]
    assert all(r["options"].device == "cuda" for r in plan)
