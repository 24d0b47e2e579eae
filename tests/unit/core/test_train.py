import pytest
import torch

from compress.train import Objective, TaskObjective, TrainConfig, train


class _Interrupt(Exception):
    pass


class InterruptAt(TaskObjective):
    def __init__(self, task, at):
        super().__init__(task)
        self.at = at

    def after_step(self, model, ctx):
        if ctx.step + 1 == self.at:
            raise _Interrupt


def _weights(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_training_learns_and_is_deterministic(digits_small, tiny_model):
    cfg = TrainConfig(epochs=8, batch_size=32, lr=5e-3, seed=3)
    a = tiny_model.copy()
    b = tiny_model.copy()
    res = train(a.module, digits_small, cfg)
    train(b.module, digits_small, cfg)
    assert res.steps == 8 * 8  # 256 train samples / 32 per batch
    assert res.history[-1]["loss"] < res.history[0]["loss"] * 1.5
    assert res.metrics["accuracy"] > 0.3  # far above 10% chance
    for k, v in _weights(a.module).items():
        torch.testing.assert_close(v, _weights(b.module)[k])


def test_resume_after_interruption_gives_identical_weights(tmp_path, digits_small, tiny_model):
    cfg = TrainConfig(epochs=2, batch_size=32, checkpoint_every=3, seed=1)
    reference = tiny_model.copy()
    train(reference.module, digits_small, cfg)

    interrupted = tiny_model.copy()
    ckpt = tmp_path / "train.ckpt.pt"
    with pytest.raises(_Interrupt):
        train(interrupted.module, digits_small, cfg, objective=InterruptAt("classification", 10), checkpoint=ckpt)
    assert ckpt.exists()
    resumed = tiny_model.copy()  # a fresh process would start from the initial weights
    res = train(resumed.module, digits_small, cfg, checkpoint=ckpt)
    assert res.resumed_from == 9  # the checkpoint of step 9 (every 3 steps) is the last before the crash
    for k, v in _weights(reference.module).items():
        torch.testing.assert_close(v, _weights(resumed.module)[k], rtol=0, atol=0)


def test_resume_refuses_changed_settings(tmp_path, digits_small, tiny_model):
    ckpt = tmp_path / "c.pt"
    train(tiny_model.copy().module, digits_small, TrainConfig(epochs=1, batch_size=64), checkpoint=ckpt)
    from compress.errors import RecipeError

    with pytest.raises(RecipeError, match="different training settings"):
        train(tiny_model.copy().module, digits_small, TrainConfig(epochs=1, batch_size=32), checkpoint=ckpt)


def test_objective_modules_are_trained(digits_small, tiny_model):
    class WithHead(Objective):
        def __init__(self):
            self.head = torch.nn.Linear(10, 10)
            self.before = self.head.weight.detach().clone()

        def modules(self):
            return {"head": self.head}

        def loss(self, model, aux, batch, ctx):
            x, y = batch
            return torch.nn.functional.cross_entropy(aux["head"](model(x)), y), {}

    obj = WithHead()
    train(tiny_model.module, digits_small, TrainConfig(epochs=1, batch_size=64), objective=obj)
    assert not torch.equal(obj.head.weight.detach(), obj.before)


def test_api_train_records_history_and_leaves_input_untouched(digits_small, tiny_model):
    from compress.api import train as train_verb

    before = {k: v.clone() for k, v in tiny_model.module.state_dict().items()}
    result = train_verb(tiny_model, digits_small, TrainConfig(epochs=1, batch_size=64))
    assert result.model is not tiny_model
    assert [s["technique"] for s in result.model.history] == ["train"]
    assert result.model.history[0]["params"]["epochs"] == 1
    for k, v in tiny_model.module.state_dict().items():
        assert torch.equal(v, before[k])


def test_batchnorm_recalibration_averages_the_sample():
    from torch.utils.data import TensorDataset

    from compress.train.loop import recalibrate_batchnorm

    x = torch.rand(64, 3, 4, 4) * torch.tensor([1.0, 5.0, 9.0]).view(1, 3, 1, 1) + 2.0
    bn = torch.nn.BatchNorm2d(3, momentum=0.1)
    assert recalibrate_batchnorm(torch.nn.Sequential(bn).eval(), TensorDataset(x), 4, 16, torch.device("cpu"))
    torch.testing.assert_close(bn.running_mean, x.mean(dim=(0, 2, 3)))
    assert bn.momentum == 0.1 and not bn.training  # settings restored
    assert not recalibrate_batchnorm(torch.nn.Linear(2, 2), TensorDataset(x), 4, 16, torch.device("cpu"))


def test_short_training_evaluates_with_recalibrated_statistics(digits_small, tiny_model):
    cfg = dict(epochs=2, batch_size=32, lr=5e-3)
    plain, recal = tiny_model.copy(), tiny_model.copy()
    without = train(plain.module, digits_small, TrainConfig(**cfg, bn_recalibration=0)).metrics["accuracy"]
    res = train(recal.module, digits_small, TrainConfig(**cfg))
    assert res.history[-1]["bn_recalibrated"] and res.metrics["accuracy"] > without


def test_device_resolution_under_torchrun(monkeypatch):
    from compress.errors import CompressError
    from compress.train.loop import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto").type == "cpu"  # 2 processes, 1 GPU: all on the CPU, never a mix
    with pytest.raises(CompressError, match="one process per GPU"):
        resolve_device("cuda")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert resolve_device("auto") == torch.device("cuda", 0)
