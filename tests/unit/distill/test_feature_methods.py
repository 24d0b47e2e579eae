import pytest
import torch
from torch import nn

from compress.data import DataConfig, load_data
from compress.distill.feature import FeatureMSEConfig
from compress.distill.guidance import GuidanceConfig
from compress.distill.msd import MSDConfig, msd_loss
from compress.distill.pcd import PCDConfig, SelfAttention2d, SpatialAdaptor, projection_mlp
from compress.errors import RecipeError
from compress.methods import Context, apply
from compress.models.sources import load_model
from compress.train.evaluate import evaluate
from compress.train.loop import TrainConfig

FAST = TrainConfig(epochs=3, batch_size=16, lr=1e-2)


def test_spatial_adaptor_pools_to_the_mlp():
    torch.manual_seed(0)
    mlp = projection_mlp(8, 16, 4)
    mlp.train()
    for _ in range(3):  # give BN non-trivial statistics
        mlp(torch.randn(32, 8) * 2 + 1)
    with torch.no_grad():
        mlp[1].weight.uniform_(0.5, 2)
        mlp[1].bias.uniform_(-1, 1)
    mlp.eval()
    adaptor = SpatialAdaptor.from_mlp(mlp)
    x = torch.randn(5, 8, 6, 7) + 0.3
    with torch.no_grad():
        pooled = adaptor(x).mean(dim=(2, 3))
        assert torch.allclose(pooled, mlp(x.mean(dim=(2, 3))), atol=1e-5)
        # the per-channel gate matters: a plain ReLU would break the identity
        plain = nn.Sequential(adaptor[0], adaptor[1], nn.ReLU(), adaptor[3])
        assert not torch.allclose(plain(x).mean(dim=(2, 3)), pooled, atol=1e-3)


def test_attention_block_keeps_shape_and_mixes_pixels():
    torch.manual_seed(0)
    block = SelfAttention2d(8, 4).eval()
    x = torch.randn(2, 8, 4, 4)
    y = block(x)
    x2 = x.clone()
    x2[:, :, 0, 0] = torch.randn(2, 8)  # (LayerNorm would erase a constant shift)
    assert y.shape == x.shape
    assert not torch.allclose(block(x2)[:, :, 3, 3], y[:, :, 3, 3])  # a far pixel sees the change


def test_msd_loss_lower_when_aligned():
    torch.manual_seed(0)
    ft = torch.randn(8, 16, 4, 4)
    aligned = msd_loss(ft + 0.05 * torch.randn_like(ft), ft, [1, 2, 4], 0.1)
    shuffled = msd_loss(ft[torch.randperm(8)], ft, [1, 2, 4], 0.1)
    assert float(aligned) < float(shuffled)


@pytest.mark.parametrize(
    "method,config,drop,acc",
    [
        ("guidance", GuidanceConfig(train=FAST), 0.9, 0.2),
        ("msd", MSDConfig(train=FAST), 0.97, 0.12),  # the contrastive term dominates early training
        ("feature_mse", FeatureMSEConfig(train=FAST), 0.9, 0.2),
    ],
)
def test_feature_methods_train_the_student(digits, teacher, make_student, method, config, drop, acc):
    student = make_student()
    before = evaluate(student.module, digits.val, "classification")["loss"]
    res = apply("distill", student, config, Context(data=digits, teacher=teacher))
    assert res.metrics["loss"] < drop * before
    assert res.metrics["accuracy"] > acc
    assert sum(p.numel() for p in res.model.module.parameters()) == sum(
        p.numel() for p in student.module.parameters()
    )  # heads are not left in the student


def test_guidance_pairs_by_depth_and_rejects_bad_names(digits, teacher, make_student):
    student = make_student("resnet_tiny", 0.5)
    res = apply(
        "distill",
        student,
        GuidanceConfig(train=TrainConfig(epochs=1, batch_size=32)),
        Context(data=digits, teacher=teacher),
    )
    # the CNN teacher has 3 stages ("1", "4", "5"); the student 3 (layer1..3)
    assert res.metrics["pairs"] == [["1", "layer1"], ["4", "layer2"], ["5", "layer3"]]
    with pytest.raises(RecipeError, match="candidates: .*layer1"):
        apply("distill", student, GuidanceConfig(student_layers=["layer7"]), Context(data=digits, teacher=teacher))


def test_pcd_trains_a_denoiser_and_resumes_exactly(tmp_path):
    data = load_data(DataConfig(name="digits", task="denoising", image_size=16, channels=1, limit=64))
    torch.manual_seed(0)
    teacher = load_model("builtin:dncnn", in_channels=1, input_shape=data.input_shape, kwargs={"depth": 4})
    student = load_model(
        "builtin:dncnn", in_channels=1, input_shape=data.input_shape, kwargs={"depth": 3, "width": 0.5}
    )
    before = evaluate(student.module, data.val, "denoising")["psnr"]
    cfg = PCDConfig(
        queue_size=32, attention=True, train=TrainConfig(epochs=6, batch_size=16, lr=5e-3, checkpoint_every=3)
    )
    full = apply("distill", student, cfg, Context(data=data, teacher=teacher, workdir=tmp_path / "a"))
    assert full.metrics["psnr"] > before + 1.0
    assert full.metrics["layers"] == ["features", "features"]
    # a resumed run (checkpoint at step 3 of 24, queue included) ends with the same weights
    from compress.distill.pcd import PCDObjective

    original = PCDObjective.loss

    def interrupted(self, model, aux, batch, ctx):
        if ctx.step == 5:
            raise KeyboardInterrupt
        return original(self, model, aux, batch, ctx)

    PCDObjective.loss = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            apply("distill", student, cfg, Context(data=data, teacher=teacher, workdir=tmp_path / "b"))
    finally:
        PCDObjective.loss = original
    resumed = apply("distill", student, cfg, Context(data=data, teacher=teacher, workdir=tmp_path / "b"))
    want, got = full.model.module.state_dict(), resumed.model.module.state_dict()
    assert want.keys() == got.keys()
    for k in want:
        assert torch.equal(want[k], got[k]), k
