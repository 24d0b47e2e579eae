"""The custom-layer leaf package: stable registry keys, old keys still load, loading imports no technique."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import compress
from compress.errors import ModelError
from compress.layers import (
    BitwiseConv2d,
    BitwiseLinear,
    CodebookConv2d,
    CodebookLinear,
    ConvGeometry,
    PrunableAttention,
    build_layer,
)
from compress.models import load_checkpoint, load_model, save_model

SHAPE = (3, 8, 8)
# the keys checkpoints written before the leaf package name these layers by (their old module paths)
OLD_KEYS = {
    "compress.CodebookConv2d": "compress.quantize.codebook.CodebookConv2d",
    "compress.CodebookLinear": "compress.quantize.codebook.CodebookLinear",
    "compress.BitwiseConv2d": "compress.quantize.bitwise.BitwiseConv2d",
    "compress.BitwiseLinear": "compress.quantize.bitwise.BitwiseLinear",
    "compress.PrunableAttention": "compress.prune.attention.PrunableAttention",
}
TECHNIQUE_PACKAGES = ("compress.prune", "compress.quantize", "compress.distill", "compress.train", "compress.methods")


def _run_python(code: str) -> subprocess.CompletedProcess:
    """`python -c code` in a fresh interpreter that finds this checkout's `compress` from any directory."""
    root = str(Path(compress.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)


def _model_with_custom_layers():
    """resnet_tiny with one layer of each custom kind, built here without any technique."""
    gen = torch.Generator().manual_seed(0)
    model = load_model("builtin:resnet_tiny", num_classes=10, input_shape=SHAPE, kwargs={"width": 0.5})
    m = model.module
    stem = CodebookConv2d.from_conv(m.stem[0], bits=2, codebook_groups=2)
    stem.set_weight(torch.randint(0, 4, (8, 27), generator=gen), torch.randn(2, 4, generator=gen), torch.arange(8) % 2)
    m.stem[0] = stem
    conv = BitwiseConv2d(**ConvGeometry.conv_args(m.layer1.conv1), bits=4, trained_bits=4)
    conv.set_from_integers(torch.randint(-7, 8, (8, 8, 3, 3), generator=gen).float(), 0.05)
    m.layer1.conv1 = conv
    fc = CodebookLinear.from_linear(m.fc, bits=3, codebook_groups=1)
    fc.set_weight(torch.randint(0, 8, (10, 32), generator=gen), torch.randn(1, 8, generator=gen), torch.zeros(10))
    m.fc = fc
    # children the forward does not call: the checkpoint must still carry and rebuild them
    m.attn = PrunableAttention(embed_dim=8, num_heads=2, head_dim=4)
    m.aux = BitwiseLinear(8, 4, True, bits=3, trained_bits=3)
    m.aux.set_from_integers(torch.randint(-3, 4, (4, 8), generator=gen).float(), 0.5)
    model.module.eval()
    return model


def _saved(tmp_path):
    model = _model_with_custom_layers()
    path = save_model(model, tmp_path / "custom.pt")
    return model, path


def _assert_same_network(loaded, model):
    x = torch.rand(2, *SHAPE, generator=torch.Generator().manual_seed(1))
    tokens = torch.rand(2, 5, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(loaded.module(x), model.module(x))
        assert torch.equal(loaded.module.attn(tokens, tokens, tokens)[0], model.module.attn(tokens, tokens, tokens)[0])
        assert torch.equal(loaded.module.aux.weight_value(), model.module.aux.weight_value())
    assert isinstance(loaded.module.stem[0], CodebookConv2d) and isinstance(loaded.module.fc, CodebookLinear)


def test_checkpoint_names_layers_by_stable_keys(tmp_path):
    model, path = _saved(tmp_path)
    records = torch.load(path, weights_only=True)["surgery"]
    keys = {r["path"]: r["layer"] for r in records if "layer" in r}
    assert keys == {
        "stem.0": "compress.CodebookConv2d",
        "layer1.conv1": "compress.BitwiseConv2d",
        "fc": "compress.CodebookLinear",
        "attn": "compress.PrunableAttention",
        "aux": "compress.BitwiseLinear",
    }
    _assert_same_network(load_checkpoint(path), model)


def test_checkpoint_written_with_module_path_keys_still_loads(tmp_path):
    """A checkpoint saved before the layers moved names them `module.qualname`."""
    model, path = _saved(tmp_path)
    payload = torch.load(path, weights_only=True)
    for rec in payload["surgery"]:
        if rec.get("layer") in OLD_KEYS:
            rec["layer"] = OLD_KEYS[rec["layer"]]
    assert {r["layer"] for r in payload["surgery"] if "layer" in r} == set(OLD_KEYS.values())
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    _assert_same_network(load_checkpoint(old), model)


def test_loading_a_checkpoint_imports_no_technique(tmp_path):
    model, path = _saved(tmp_path)
    x = torch.rand(2, *SHAPE, generator=torch.Generator().manual_seed(1))
    torch.save(x, tmp_path / "x.pt")
    code = (
        "import json, sys, torch\n"
        "import compress.models.checkpoint as ckpt\n"
        f"m = ckpt.load_checkpoint({str(path)!r})\n"
        f"x = torch.load({str(tmp_path / 'x.pt')!r})\n"
        f"torch.save(m.module(x), {str(tmp_path / 'y.pt')!r})\n"
        "kinds = sorted({type(v).__name__ for v in m.module.modules()})\n"
        "print(json.dumps({'modules': sorted(n for n in sys.modules if n.startswith('compress')), 'kinds': kinds}))\n"
    )
    out = _run_python(code)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert {"CodebookConv2d", "CodebookLinear", "BitwiseConv2d", "BitwiseLinear", "PrunableAttention"} <= set(
        seen["kinds"]
    )
    imported = [n for n in seen["modules"] if n.startswith(TECHNIQUE_PACKAGES)]
    assert imported == [], imported
    with torch.no_grad():
        assert torch.equal(torch.load(tmp_path / "y.pt"), model.module(x))


def test_layers_package_is_a_leaf():
    """`compress.layers` imports nothing of compress but the errors and the registry helper (no circle)."""
    code = "import sys, compress.layers; print(' '.join(sorted(n for n in sys.modules if n.startswith('compress'))))"
    out = _run_python(code)
    assert out.returncode == 0, out.stderr
    outside = [n for n in out.stdout.split() if n not in ("compress", "compress.errors", "compress.registry")]
    assert outside and all(n == "compress.layers" or n.startswith("compress.layers.") for n in outside), outside


def test_unknown_layer_key_lists_the_registered_ones():
    with pytest.raises(ModelError, match=r"unknown layer type 'compress.Nope'; available: .*compress.CodebookConv2d"):
        build_layer("compress.Nope", {})
    assert isinstance(build_layer("nn.ReLU", {}), nn.ReLU)
