"""Training-time augmentation (torchvision v2), non-square inputs and DataLoader worker processes."""

import pickle

import pytest
import torch
from torch import nn

from compress.config import from_dict
from compress.data import DataConfig, load_data
from compress.errors import DataError, RecipeError
from compress.train.loop import TaskObjective, TrainConfig, train


class Recorder(TaskObjective):
    """The task's loss, keeping the inputs of every training step."""

    def __init__(self, task="classification"):
        super().__init__(task)
        self.batches = []

    def loss(self, model, aux, batch, ctx):
        self.batches.append(batch[0].detach().clone())
        return super().loss(model, aux, batch, ctx)


def linear(shape, classes=10):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(shape[0] * shape[1] * shape[2], classes))


def run(data, epochs=1, workers=None, **cfg):
    """The training batches the loop fed, and the inputs the network saw in eval mode."""
    if workers is not None:
        data.config.workers = workers
    model = linear(data.input_shape, max(data.num_classes, 1))
    seen = []
    model.register_forward_pre_hook(lambda m, args: None if m.training else seen.append(args[0].clone()))
    rec = Recorder(data.task)
    config = TrainConfig(epochs=epochs, batch_size=16, bn_recalibration=0, eval_every=0, device="cpu", **cfg)
    train(model, data, config, objective=rec, show_progress=False)
    return rec.batches, torch.cat(seen)


@pytest.fixture(scope="module")
def digits():
    return load_data(DataConfig(name="digits", image_size=12, limit=48))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two classes of 30 x 40 (H x W) PNG photos with structure, so crops and flips change them."""
    from PIL import Image

    root = tmp_path_factory.mktemp("folder")
    g = torch.Generator().manual_seed(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir()
        for i in range(8):
            pixels = (torch.rand(30, 40, 3, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(root / cls / f"{i}.png")
    return root


def test_augment_changes_training_batches_but_never_the_validation_inputs(digits):
    plain, val_plain = run(digits)
    for augment in ("flip", "crop_flip"):
        augmented, val_aug = run(digits, augment=augment)
        assert len(augmented) == len(plain)
        assert not torch.equal(augmented[0], plain[0])
        assert augmented[0].shape == plain[0].shape == (16, 3, 12, 12)
        torch.testing.assert_close(val_aug, val_plain, rtol=0, atol=0)
    val = torch.stack([digits.val[i][0] for i in range(len(digits.val))])
    torch.testing.assert_close(val_plain, val, rtol=0, atol=0)  # evaluation: the plain split
    flipped, _ = run(digits, augment="flip")
    for x, y in zip(flipped[0], plain[0], strict=True):  # each image plain or mirrored, no other change
        assert torch.equal(x, y) or torch.equal(x, y.flip(-1))


def test_same_seed_same_augmented_batches_and_each_epoch_draws_anew(digits):
    a, _ = run(digits, epochs=2, augment="crop_flip", seed=3)
    b, _ = run(digits, epochs=2, augment="crop_flip", seed=3)
    c, _ = run(digits, epochs=2, augment="crop_flip", seed=4)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert not torch.equal(a[0], c[0])
    from compress.data.augment import Augmented, build_augmentation

    t = build_augmentation("crop_flip", digits.input_shape)
    e0, e1 = Augmented(digits.train, t, 3, 0), Augmented(digits.train, t, 3, 1)
    later_first = [e0[i][0] for i in (5, 1)]  # the draw of a sample does not depend on access order
    assert torch.equal(later_first[1], e0[1][0]) and torch.equal(later_first[0], e0[5][0])
    assert not torch.equal(e0[1][0], e1[1][0])
    before = torch.get_rng_state()
    e0[2]  # and the global generator is left as it was
    assert torch.equal(before, torch.get_rng_state())


class Stop(Exception):
    pass


class StopAt(TaskObjective):
    def __init__(self, at):
        super().__init__("classification")
        self.at = at

    def after_step(self, model, ctx):
        if ctx.step + 1 == self.at:
            raise Stop


def test_augmented_run_resumes_to_identical_weights(tmp_path, digits):
    cfg = TrainConfig(epochs=2, batch_size=16, checkpoint_every=2, seed=1, augment="crop_flip", device="cpu")
    whole = linear(digits.input_shape)
    train(whole, digits, cfg, show_progress=False)
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(Stop):
        train(linear(digits.input_shape), digits, cfg, objective=StopAt(5), checkpoint=ckpt, show_progress=False)
    resumed = linear(digits.input_shape)
    res = train(resumed, digits, cfg, checkpoint=ckpt, show_progress=False)
    assert res.resumed_from == 4  # inside the second epoch (3 steps an epoch): its draws are made again, the same
    for k, v in whole.state_dict().items():
        torch.testing.assert_close(v, resumed.state_dict()[k], rtol=0, atol=0)


def test_function_matching_refuses_the_loop_augmentation(digits):
    from compress.distill.funmatch import FunMatchConfig, FunMatchObjective

    teacher = linear(digits.input_shape)
    objective = FunMatchObjective(teacher, "classification", FunMatchConfig())
    with pytest.raises(RecipeError, match="FunMatchObjective makes its own views"):
        train(linear(digits.input_shape), digits, TrainConfig(epochs=1, augment="flip"), objective=objective)


def test_dense_tasks_flip_input_and_target_together_and_refuse_crops():
    data = load_data(DataConfig(name="digits", task="denoising", image_size=12, limit=32))
    from compress.data.augment import Augmented, build_augmentation

    flip = Augmented(data.train, build_augmentation("flip", data.input_shape, task="denoising"), 0, 0)
    flipped = 0
    for i in range(len(data.train)):
        (noisy, clean), (n2, c2) = data.train[i], flip[i]
        assert (torch.equal(n2, noisy) and torch.equal(c2, clean)) or (
            torch.equal(n2, noisy.flip(-1)) and torch.equal(c2, clean.flip(-1))
        )
        flipped += not torch.equal(n2, noisy)
    assert 0 < flipped < len(data.train)
    with pytest.raises(RecipeError, match="use flip"):
        run(data, augment="crop_flip")


def test_bad_augmentation_settings_are_one_line_errors():
    for raw, fragment in (
        ({"augment": "rotate"}, "'rotate' is not one of 'none', 'flip', 'crop_flip'"),
        ({"crop_scale": [0.5, 0.2]}, "crop_scale: expected 0 < low <= high <= 1"),
        ({"crop_scale": [0.0, 1.0]}, "crop_scale"),
        ({"crop_ratio": [2.0, 1.0]}, "crop_ratio"),
    ):
        with pytest.raises(RecipeError, match=fragment) as e:
            from_dict(TrainConfig, raw, where="r.yaml: train")
        assert "\n" not in str(e.value) and str(e.value).startswith("r.yaml: train")


def test_non_square_image_folder_keeps_the_aspect_ratio(folder):
    data = load_data(DataConfig(name=f"imagefolder:{folder}", image_size=(12, 16), resize="shorter"))
    assert data.input_shape == (3, 12, 16) and data.config.image_size == (12, 16)
    assert data.train[0][0].shape == (3, 12, 16)
    from compress.data.transforms import fit_image

    wide = torch.rand(1, 3, 30, 60)
    out = fit_image(wide, (10, 40), "shorter", 1.0, "bilinear")  # scaled to cover 10 x 40: 20 x 40, centre 10 rows
    assert out.shape == (1, 3, 10, 40)
    ref = torch.nn.functional.interpolate(wide, size=(20, 40), mode="bilinear", antialias=True)[..., 5:15, :]
    torch.testing.assert_close(out, ref.clamp(0, 1))
    assert fit_image(wide, (10, 40), "squash", None, None).shape == (1, 3, 10, 40)
    assert load_data(DataConfig(name="digits", image_size=[8, 8])).config.image_size == 8  # a square: one int
    assert load_data(DataConfig(name="synthetic:3x8x12")).input_shape == (3, 8, 12)


def test_bad_image_sizes_are_one_line_errors():
    for bad, fragment in (
        ([3, 4, 5], "expected one size or [H, W]"),
        ([0, 8], "each side must be between 4 and 4096, got 0"),
        ([8, 5000], "each side must be between 4 and 4096, got 5000"),
        (2, "between 4 and 4096"),
        (5000, "between 1 and 4096"),
        ("big", "image_size"),
    ):
        with pytest.raises(RecipeError, match=fragment.replace("[", r"\[").replace("]", r"\]")) as e:
            from_dict(DataConfig, {"image_size": bad}, where="r.yaml: data")
        assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="synthetic:3x2x8"):
        load_data(DataConfig(name="synthetic:3x2x8"))
    from compress.cli.common import data_config, parse_image_size
    from compress.errors import CompressError

    assert parse_image_size("192x256") == (192, 256) and parse_image_size("32") == 32
    assert data_config("digits", image_size="12x16").image_size == (12, 16)
    for text in ("12x", "axb", "1x2x3", ""):
        with pytest.raises(CompressError, match="--image-size: expected a size or HxW"):
            parse_image_size(text)
    from compress.models.preprocess import describe_preprocessing, resolve_preprocessing

    with pytest.raises(DataError, match="preprocessing.input_size"):
        resolve_preprocessing({}, {"input_size": [3, 224]})
    prep = resolve_preprocessing({"input_size": [3, 192, 256], "resize": "shorter", "crop_pct": 0.8}, None)
    assert "-> centre 192x256" in describe_preprocessing(prep)


def test_non_square_model_trains_and_exports_at_that_shape(folder, tmp_path):
    import onnx
    from typer.testing import CliRunner

    from compress.cli.main import app

    runner = CliRunner()
    out = tmp_path / "run"
    args = ["train", "--model", "builtin:simple_cnn", "--width", "0.25", "--data", f"imagefolder:{folder}"]
    result = runner.invoke(app, [*args, "--image-size", "12x16", "--epochs", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["export", str(out), "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    dims = onnx.load(str(tmp_path / "m.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims][1:] == [3, 12, 16]
    bad = runner.invoke(app, [*args, "--image-size", "12x", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and bad.output.startswith("error: --image-size") and len(bad.output.splitlines()) == 1


def test_workers_give_the_same_batches_as_the_main_process(folder, monkeypatch):
    import compress.train.loop as loop
    from compress.data import with_preprocessing

    counts = []

    class Loader(loop.DataLoader):
        def __iter__(self):
            counts.append(self.num_workers)
            return super().__iter__()

    monkeypatch.setattr(loop, "DataLoader", Loader)

    config = DataConfig(name=f"imagefolder:{folder}", image_size=(12, 16), resize="shorter")
    data = with_preprocessing(load_data(config), {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]})
    pickle.loads(pickle.dumps(data.train))  # datasets travel to worker processes under spawn too
    main, val_main = run(data, epochs=2, workers=0, augment="crop_flip")
    assert set(counts) == {0}
    two, val_two = run(data, epochs=2, workers=2, augment="crop_flip")
    assert counts[-2:] == [2, 2]  # the training batches came from worker processes
    assert len(main) == len(two) == 2  # 13 training images, batches of 16
    for x, y in zip(main, two, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    torch.testing.assert_close(val_main, val_two, rtol=0, atol=0)
    assert from_dict(DataConfig, {"workers": 2}).workers == 2
    with pytest.raises(RecipeError, match="workers: must be between 0 and 64"):
        from_dict(DataConfig, {"workers": 65})


def test_a_checkpoint_from_before_the_augmentation_fields_still_resumes(tmp_path, digits):
    cfg = TrainConfig(epochs=2, batch_size=16, checkpoint_every=2, seed=1, device="cpu")
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(Stop):
        train(linear(digits.input_shape), digits, cfg, objective=StopAt(5), checkpoint=ckpt, show_progress=False)
    state = torch.load(ckpt, weights_only=True)
    for key in ("augment", "crop_scale", "crop_ratio"):
        del state["config"][key]  # as written before these settings existed
    torch.save(state, ckpt)
    assert train(linear(digits.input_shape), digits, cfg, checkpoint=ckpt, show_progress=False).resumed_from == 4
    with pytest.raises(RecipeError, match="augment: 'none' != 'flip'"):  # a changed setting is still refused
        train(linear(digits.input_shape), digits, TrainConfig(**{**vars(cfg), "augment": "flip"}), checkpoint=ckpt)
