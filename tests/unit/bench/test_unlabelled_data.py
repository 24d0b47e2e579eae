"""`images:PATH` (no labels), `imagefolder` labels that match the model, and no fake accuracy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from compress.data import UNLABELLED, DataConfig, load_data
from compress.errors import CompressError, DataError


def _png(path, seed: int = 0, size=(12, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def photo_dir(tmp_path):
    root = tmp_path / "photos"
    for i in range(4):
        _png(root / f"a{i}.png", i)
    for i in range(3):
        _png(root / "nested" / "deeper" / f"b{i}.jpg", 10 + i)
    (root / "notes.txt").write_text("not an image")
    _png(root / ".hidden" / "skip.png", 99)
    return root


def test_images_source_reads_every_image_recursively_without_labels(photo_dir):
    bundle = load_data(DataConfig(name=f"images:{photo_dir}", image_size=8, val_fraction=0.3))
    assert len(bundle.train) + len(bundle.val) == 7  # 4 png + 3 jpg; .txt and hidden files skipped
    assert bundle.num_classes == 0 and not bundle.labelled
    x, y = bundle.val[0]
    assert tuple(x.shape) == (3, 8, 8) and y == UNLABELLED
    assert {bundle.train[i][1] for i in range(len(bundle.train))} == {UNLABELLED}


def test_images_source_split_is_deterministic(photo_dir):
    a = load_data(DataConfig(name=f"images:{photo_dir}", image_size=8))
    b = load_data(DataConfig(name=f"images:{photo_dir}", image_size=8))
    assert a.val.samples == b.val.samples


def test_empty_missing_and_unreadable_image_folders_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("x")
    with pytest.raises(DataError, match="no image files") as e:
        load_data(DataConfig(name=f"images:{tmp_path / 'empty'}"))
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="directory not found"):
        load_data(DataConfig(name=f"images:{tmp_path / 'nowhere'}"))
    bad = tmp_path / "bad"
    _png(bad / "ok.png")
    (bad / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="broken.png") as e:
        load_data(DataConfig(name=f"images:{bad}"))
    assert "\n" not in str(e.value)


def _class_tree(root, names, per_class: int = 3) -> None:
    for k, name in enumerate(names):
        for i in range(per_class):
            _png(root / name / f"{i}.png", 7 * k + i)


def _labels(bundle) -> set[int]:
    return {int(ds[i][1]) for ds in (bundle.train, bundle.val) for i in range(len(ds))}


def test_numeric_class_folders_are_the_model_output_indices(tmp_path):
    _class_tree(tmp_path, ["207", "3"])
    bundle = load_data(DataConfig(name=f"imagefolder:{tmp_path}", image_size=8))
    assert _labels(bundle) == {3, 207} and bundle.num_classes == 208


def test_a_mapping_file_names_the_indices(tmp_path):
    _class_tree(tmp_path, ["n02085620", "n01440764"])
    (tmp_path / "classes.txt").write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish\nn02085620 Chihuahua\n")
    bundle = load_data(DataConfig(name=f"imagefolder:{tmp_path}", image_size=8))
    assert _labels(bundle) == {0, 2} and bundle.num_classes == 3
    (tmp_path / "classes.txt").unlink()
    (tmp_path / "classes.json").write_text(json.dumps({"n01440764": 0, "n02085620": 151}))
    bundle = load_data(DataConfig(name=f"imagefolder:{tmp_path}", image_size=8))
    assert _labels(bundle) == {0, 151} and bundle.num_classes == 152


def test_a_mapping_file_without_a_folder_is_a_one_line_error(tmp_path):
    _class_tree(tmp_path, ["cat", "dog"])
    (tmp_path / "classes.json").write_text(json.dumps(["cat"]))
    with pytest.raises(DataError, match="no index for class folder 'dog'"):
        load_data(DataConfig(name=f"imagefolder:{tmp_path}", image_size=8))
    (tmp_path / "classes.json").write_text("{broken")
    with pytest.raises(DataError, match="not a JSON file"):
        load_data(DataConfig(name=f"imagefolder:{tmp_path}", image_size=8))


def test_named_folders_without_a_mapping_keep_their_positions(tmp_path):
    _class_tree(tmp_path, ["zebra", "ant", "cat"])
    bundle = load_data(DataConfig(name=f"imagefolder:{tmp_path}", image_size=8))
    assert _labels(bundle) == {0, 1, 2} and bundle.num_classes == 3
    label_of = {p.split("/")[-2]: y for ds in (bundle.train, bundle.val) for p, y in ds.samples}
    assert label_of == {"ant": 0, "cat": 1, "zebra": 2}


def test_accuracy_counts_labelled_samples_only_and_none_without_labels():
    from compress.tasks import get_task

    task = get_task("classification")
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0], [5.0, 0.0]])
    m = task.metric()
    m.update(logits, torch.tensor([UNLABELLED, UNLABELLED, UNLABELLED]))
    assert "accuracy" not in m.compute()
    m = task.metric()
    m.update(logits, torch.tensor([0, UNLABELLED, 1]))  # one right, one wrong, one unlabelled
    got = m.compute()
    assert got["accuracy"] == pytest.approx(0.5) and got["samples"] == 2
    loss = task.loss(logits, torch.tensor([UNLABELLED] * 3))
    assert float(loss) == 0.0
    mixed = task.loss(logits, torch.tensor([0, UNLABELLED, 1]))
    plain = torch.nn.functional.cross_entropy(logits[[0, 2]], torch.tensor([0, 1]))
    assert float(mixed) == pytest.approx(float(plain))


def test_plain_training_on_unlabelled_images_is_refused(photo_dir):
    from compress.train import TrainConfig
    from compress.train.loop import train

    bundle = load_data(DataConfig(name=f"images:{photo_dir}", image_size=8))
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 10))
    with pytest.raises(CompressError, match="no labels"):
        train(net, bundle, TrainConfig(epochs=1))


def test_bench_reports_no_accuracy_on_unlabelled_images(photo_dir, tmp_path):
    from compress.bench import BenchConfig, LatencyConfig, bench

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    path = tmp_path / "m.onnx"
    torch.onnx.export(
        net, (torch.rand(1, 3, 8, 8),), str(path), dynamo=False, input_names=["input"],
        dynamic_axes={"input": {0: "batch"}},
    )  # fmt: skip
    bundle = load_data(DataConfig(name=f"images:{photo_dir}", image_size=8))
    cfg = BenchConfig(threads=1, latency=LatencyConfig(min_iters=3, min_time_s=0.0, warmup_s=0.0))
    result = bench(path, cfg, data=bundle, reference=str(path))
    assert "metrics" not in result
    assert result["fidelity"]["top1_agreement"] == 1.0 and result["fidelity"]["samples"] == len(bundle.val)
