"""CRD, several teachers, the fixed-teacher cache, crop area scaling and the photos source."""

import copy

import pytest
import torch

from compress.data import DataConfig, load_data
from compress.data.photos import HELD_OUT, PHOTOS, _starts, held_out_photos
from compress.distill.common import gather_rows
from compress.distill.crd import CRDConfig, contrast
from compress.distill.funmatch import FunMatchConfig, FunMatchObjective, crop_min_area
from compress.distill.kd import KDConfig, KDObjective
from compress.distill.losses import kd_loss
from compress.errors import DataError
from compress.methods import Context, apply
from compress.train.loop import StepContext, TrainConfig


def test_crop_area_scales_with_the_input_size():
    cfg = FunMatchConfig()
    assert crop_min_area(cfg, 224) == pytest.approx(0.05, abs=1e-3)  # the paper's setting at 224 px
    assert crop_min_area(cfg, 100) == pytest.approx(0.25)
    assert crop_min_area(cfg, 32) == 1.0  # tiny images: no crop, mixup only
    assert crop_min_area(FunMatchConfig(min_area=0.3), 32) == 0.3  # an explicit value wins


def _step(seed=0):
    return StepContext(0, 0, 1, torch.device("cpu"), torch.Generator().manual_seed(seed))


def test_fixed_teacher_cache_gives_the_same_loss_without_running_the_teacher(digits, teacher, make_student):
    student = make_student().module.train()
    net = copy.deepcopy(teacher.module)
    cfg = FunMatchConfig(mode="fixed_teacher", min_area=0.3)
    cached = FunMatchObjective(net, "classification", cfg, train_set=digits.train)
    plain = FunMatchObjective(
        net, "classification", FunMatchConfig(mode="fixed_teacher", min_area=0.3, cache_teacher=False)
    )
    cached.setup(student, torch.device("cpu"))
    plain.setup(student, torch.device("cpu"))
    idx = torch.tensor([5, 0, 17, 3])
    x = torch.stack([digits.train[int(i)][0] for i in idx])
    y = torch.tensor([int(digits.train[int(i)][1]) for i in idx])
    calls = []
    hook = net.register_forward_hook(lambda *a: calls.append(1))
    torch.manual_seed(0)
    a = cached.loss(student, None, (x, y, idx), _step())[0]
    assert not calls  # the cached objective never runs the teacher during training
    torch.manual_seed(0)
    b = plain.loss(student, None, (x, y), _step())[0]
    hook.remove()
    assert calls and torch.allclose(a, b, atol=1e-5)


def test_several_teachers_sum_their_kd_terms(digits, teacher, make_student):
    student = make_student().module.eval()
    x, y = digits.train[0][0][None].repeat(4, 1, 1, 1), torch.zeros(4, dtype=torch.long)
    one = KDObjective(teacher.module, "classification", KDConfig(alpha=1.0))
    two = KDObjective(teacher.module, "classification", KDConfig(alpha=1.0), extra=[copy.deepcopy(teacher.module)])
    l1, l2 = one.loss(student, None, (x, y), _step())[0], two.loss(student, None, (x, y), _step())[0]
    assert torch.allclose(l2, 2 * l1) and l1 > 0
    with torch.no_grad():
        assert torch.allclose(l1, kd_loss(student(x), teacher.module(x), 4.0))


def test_extra_teacher_specs_load_and_count(digits, teacher, make_student, tmp_path):
    from compress.models.checkpoint import save_model

    path = save_model(teacher, tmp_path / "t2.pt")
    cfg = KDConfig(extra_teachers=[str(path)], train=TrainConfig(epochs=1, batch_size=64))
    res = apply("distill", make_student(), cfg, Context(data=digits, teacher=teacher))
    assert res.metrics["teachers"] == 2
    with pytest.raises(Exception, match="not found"):
        apply("distill", make_student(), KDConfig(extra_teachers=["nope.pt"]), Context(data=digits, teacher=teacher))


def test_contrast_prefers_the_matching_memory_entry():
    g = torch.Generator().manual_seed(0)
    bank = torch.nn.functional.normalize(torch.randn(20, 8, generator=g), dim=1)
    idx = torch.tensor([0, 1, 2])
    neg = torch.tensor([[5, 6, 7], [8, 9, 10], [11, 12, 13]])
    good = contrast(bank[idx], bank, idx, neg, 0.1)
    bad = contrast(bank[[4, 4, 4]], bank, idx, neg, 0.1)
    assert good < bad and good < 0.1


def test_crd_trains_and_updates_both_memory_banks(digits, teacher, make_student, monkeypatch):
    from compress.distill import crd as crd_module

    seen = {}
    original = crd_module.CRDObjective.close

    def close(self):
        seen["s"], seen["t"], seen["k"] = self.memory_s.clone(), self.memory_t.clone(), self.k
        original(self)

    monkeypatch.setattr(crd_module.CRDObjective, "close", close)
    cfg = CRDConfig(train=TrainConfig(epochs=3, batch_size=16, lr=1e-2))
    res = apply("distill", make_student(), cfg, Context(data=digits, teacher=teacher))
    assert res.metrics["accuracy"] > 0.3 and res.metrics["negatives"] == len(digits.train) - 1 == seen["k"]
    g = torch.Generator().manual_seed(0)  # the banks' initial values (seeded by train.seed)
    init_s = torch.nn.functional.normalize(torch.randn(len(digits.train), cfg.feat_dim, generator=g), dim=1)
    assert not torch.allclose(seen["s"], init_s)  # every training image was written to the bank
    assert torch.allclose(seen["s"].norm(dim=1), torch.ones(len(digits.train)))
    assert (seen["s"] - init_s).norm(dim=1).min() > 0


def test_gather_rows_is_the_identity_in_one_process():
    t = torch.arange(6.0).view(3, 2)
    assert gather_rows(t) is t


def test_photos_hold_out_whole_photos_tiled_exactly_once():
    data = load_data(DataConfig(name="photos:64", task="denoising", image_size=32, channels=3))
    held = held_out_photos(DataConfig(channels=3), "64")
    assert set(HELD_OUT) < set(PHOTOS) and len(held) == len(HELD_OUT)
    tiles = sum(len(_starts(p.shape[1], 32, 32)) * len(_starts(p.shape[2], 32, 32)) for p in held)
    assert len(data.val) == tiles
    noisy, clean = data.val[0]
    assert clean.shape == (3, 32, 32) and not torch.equal(noisy, clean)
    assert torch.equal(clean, held[0][:, :32, :32])  # the first tile is the top-left corner of a held-out photo
    train_clean = torch.stack([data.train[i][1] for i in range(len(data.train))])
    assert not any(torch.equal(clean, t) for t in train_clean)
    assert _starts(70, 32, 32) == [0, 32, 38]  # the far edge is covered
    with pytest.raises(DataError, match="no labels"):
        load_data(DataConfig(name="photos:64", image_size=32))


def test_batchnorm_is_recalibrated_on_the_students_views_not_plain_images(digits):
    from torch import nn

    from compress.distill.funmatch import recalibrate_on_views
    from compress.train.loop import recalibrate_batchnorm

    def bn_only():
        return nn.Sequential(nn.BatchNorm2d(1))

    cfg = FunMatchConfig(mode="function_matching", min_area=1.0, train=TrainConfig(batch_size=32))
    on_views, on_plain = bn_only(), bn_only()
    assert recalibrate_on_views(on_views, digits.train, cfg, 4, torch.device("cpu"))
    recalibrate_batchnorm(on_plain, digits.train, 4, 32, torch.device("cpu"))
    views, plain = on_views[0], on_plain[0]
    # mixup averages pairs of images: the same mean, a smaller variance than the plain images
    assert torch.allclose(views.running_mean, plain.running_mean, rtol=0.05)
    assert views.running_var < 0.95 * plain.running_var  # the same images, unmixed: equal
    assert FunMatchObjective(nn.Identity(), "classification", cfg).recalibrate_bn is False
    plain_cfg = FunMatchConfig(recalibrate_on="plain")
    assert FunMatchObjective(nn.Identity(), "classification", plain_cfg).recalibrate_bn is True


def test_crd_default_is_the_papers_crd_plus_kd(digits, teacher, make_student):
    """CRD alone trails plain training on small few-class data (crd.py docstring): the default adds
    the logit KD term with weight 1, as the paper's CRD+KD; kd_weight 0 is CRD alone."""
    from compress.distill import crd as crd_module
    from compress.distill.taps import resolve_layers, shape_of

    student = make_student().module.eval()
    shape = digits.input_shape
    tl = resolve_layers(teacher.module, "auto", shape, role="teacher", max_layers=1)[0]
    sl = resolve_layers(student, "auto", shape, role="student", max_layers=1)[0]
    tdim, sdim = shape_of(teacher.module, shape, [tl])[tl][1], shape_of(student, shape, [sl])[sl][1]
    idx = torch.tensor([5, 0, 17, 3])
    x = torch.stack([digits.train[int(i)][0] for i in idx])
    y = torch.tensor([int(digits.train[int(i)][1]) for i in idx])
    losses = {}
    for name, cfg in (("default", CRDConfig()), ("alone", CRDConfig(kd_weight=0.0))):
        torch.manual_seed(0)
        heads = {"embed_s": torch.nn.Linear(sdim, cfg.feat_dim), "embed_t": torch.nn.Linear(tdim, cfg.feat_dim)}
        obj = crd_module.CRDObjective(teacher.module, "classification", tl, sl, heads, len(digits.train), cfg)
        obj.setup(student, torch.device("cpu"))
        losses[name] = obj.loss(student, heads, (x, y, idx), _step())
        obj.close()
    assert CRDConfig().kd_weight == 1.0 and "kd" in losses["default"][1] and "kd" not in losses["alone"][1]
    with torch.no_grad():
        kd = kd_loss(student(x), teacher.module(x), CRDConfig().kd_temperature)
    assert kd > 0 and torch.allclose(losses["default"][0] - losses["alone"][0], kd, atol=1e-5)
    with pytest.raises(ValueError, match="kd_weight"):
        CRDConfig(kd_weight=-1.0)
