import pickle

import pytest
import torch
from torch import nn

from compress.errors import ModelError
from compress.models import load_checkpoint, load_model, save_model


def _shrink_resnet(model):
    """Hand-made channel surgery: what a pruner does."""
    m = model.module
    block = m.layer1[0]
    block.conv1 = nn.Conv2d(64, 32, 3, padding=1, bias=False)
    block.bn1 = nn.BatchNorm2d(32)
    block.conv2 = nn.Conv2d(32, 64, 3, padding=1, bias=False)
    m.layer4[1].downsample = nn.Identity()  # was a plain `None` attribute
    del m.layer4[0].downsample[1]  # remove a child
    m.layer4[0].downsample.append(nn.BatchNorm2d(512))
    return model


def test_roundtrip_of_modified_torchvision_model(tmp_path):
    model = _shrink_resnet(load_model("torchvision:resnet18", num_classes=10, input_shape=(3, 32, 32)))
    model.module.eval()
    x = torch.rand(2, 3, 32, 32)
    path = save_model(model, tmp_path / "m.pt")
    back = load_checkpoint(path)
    assert back.module.layer1[0].conv1.out_channels == 32
    assert isinstance(back.module.layer4[1].downsample, nn.Identity)
    assert back.input_shape == (3, 32, 32)
    torch.testing.assert_close(back.module(x), model.module(x))
    payload = torch.load(path, weights_only=True)  # plain data only
    assert payload["format"] == "compress.checkpoint"


def test_unchanged_model_has_no_surgery(tmp_path):
    model = load_model("builtin:resnet_tiny", num_classes=10, kwargs={"width": 0.5})
    save_model(model, tmp_path / "m.pt")
    assert torch.load(tmp_path / "m.pt", weights_only=True)["surgery"] == []


def test_unregistered_changed_module_is_refused(tmp_path):
    class Weird(nn.Module):
        def forward(self, x):
            return x

    model = load_model("builtin:simple_cnn", num_classes=10)
    model.module[2] = Weird()
    with pytest.raises(ModelError, match="not a registered layer"):
        save_model(model, tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()


def test_pickled_module_needs_trust(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save(nn.Linear(2, 2), path)
    with pytest.raises(ModelError, match="--trust-code"):
        load_checkpoint(path)
    assert isinstance(load_checkpoint(path, trust_code=True).module, nn.Linear)


def test_corrupted_and_foreign_files(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelError, match="bad.pt"):
        load_checkpoint(bad)
    sd = tmp_path / "sd.pt"
    torch.save({"w": torch.zeros(2)}, sd)
    with pytest.raises(ModelError, match="not a compress checkpoint"):
        load_checkpoint(sd)
    _ = pickle


def test_truncated_checkpoint(tmp_path):
    model = load_model("builtin:simple_cnn", num_classes=10, kwargs={"width": 0.25})
    path = save_model(model, tmp_path / "m.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="m.pt"):
        load_checkpoint(path)


def test_model_sources_errors():
    with pytest.raises(ModelError, match="unknown torchvision model 'resnet19'; available: .*resnet18"):
        load_model("torchvision:resnet19")
    with pytest.raises(ModelError, match="unknown builtin model 'nope'; available: dncnn, resnet_tiny, simple_cnn"):
        load_model("builtin:nope")
    with pytest.raises(ModelError, match="unknown model source 'hub'"):
        load_model("hub:resnet18")
    with pytest.raises(ModelError, match="model not found"):
        load_model("no/such/file.pt")


def test_torch_export_file_loads_without_trust(tmp_path):
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    x = torch.rand(2, 3, 8, 8)
    program = torch.export.export(module, (x,))
    torch.export.save(program, tmp_path / "m.pt2")
    model = load_model(str(tmp_path / "m.pt2"))
    assert model.input_shape == (3, 8, 8)
    torch.testing.assert_close(model.module(x), module(x))


def test_checkpoint_with_technique_layers_loads_in_a_fresh_process(tmp_path):
    """Loading must not depend on the technique having been imported by the caller."""
    import subprocess
    import sys

    from compress.analysis import count_params
    from compress.methods import Context, get_method
    from compress.quantize.codebook import KMeansConfig

    model = load_model("builtin:simple_cnn", num_classes=10, input_shape=(3, 8, 8), kwargs={"width": 0.25})
    result = get_method("quantize", "kmeans").fn(model, KMeansConfig(bits=2), Context(workdir=tmp_path / "w"))
    path = save_model(result.model, tmp_path / "cb.pt")
    assert count_params(result.model.module) == count_params(model.module)  # weights it stands for
    code = f"from compress.models import load_model; m = load_model({str(path)!r}); print(type(m.module[0]).__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "CodebookConv2d"


def test_tensors_resized_inside_unregistered_modules_reload(tmp_path, monkeypatch):
    """Pruning ConvNeXt shrinks CNBlock.layer_scale, a parameter of a module no layer spec describes."""
    from compress.models import checkpoint

    monkeypatch.setattr(checkpoint, "_check_forward", lambda *a: None)  # this half-pruned block cannot run
    model = load_model("torchvision:convnext_tiny", num_classes=10, input_shape=(3, 32, 32))
    block = model.module.features[1][0]
    block.layer_scale = nn.Parameter(torch.arange(48.0).reshape(48, 1, 1))
    back = load_checkpoint(save_model(model, tmp_path / "c.pt"))
    torch.testing.assert_close(back.module.features[1][0].layer_scale, block.layer_scale)
