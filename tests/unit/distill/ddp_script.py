"""Run by test_distributed.py under torchrun: a tiny distillation, then each rank saves its weights."""

import os
import sys

import torch
from torch import nn

from compress.data import DataConfig, load_data
from compress.distill.msd import MSDConfig
from compress.methods import Context, apply
from compress.models.model import Model
from compress.models.sources import load_model
from compress.train.loop import TrainConfig

out_dir = sys.argv[1]
torch.set_num_threads(1)
data = load_data(DataConfig(name="digits", image_size=8, channels=1, limit=64))
torch.manual_seed(0)
net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 10)).eval()
teacher = Model(net, {"source": "test", "name": "cnn", "kwargs": {}}, tuple(data.input_shape))
torch.manual_seed(int(os.environ["RANK"]) + 1)  # different initial weights: DDP must broadcast rank 0's
student = load_model(
    "builtin:simple_cnn", num_classes=10, in_channels=1, input_shape=data.input_shape, kwargs={"width": 0.25}
)
# msd: a projection head in Objective.modules() and a teacher outside DDP
cfg = MSDConfig(scales=[1, 2], kd_weight=0.5, train=TrainConfig(epochs=2, batch_size=8, device="cpu"))
result = apply("distill", student, cfg, Context(data=data, teacher=teacher))
params = {k: v for k, v in result.model.module.named_parameters()}
torch.save(params, os.path.join(out_dir, f"rank{os.environ['RANK']}.pt"))

# pcd: the negative queue must be gathered across processes (identical on both ranks, filled twice as fast)
from compress.distill import pcd  # noqa: E402

dense = load_data(DataConfig(name="digits", task="denoising", image_size=8, channels=1, limit=64))
torch.manual_seed(0)
denoiser = Model(
    nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1)).eval(),
    {"source": "test", "name": "den", "kwargs": {}},
    tuple(dense.input_shape),
    "denoising",
)
original_close = pcd.PCDObjective.close


def close(self):
    torch.save(
        {"queue": self.queue.cpu(), "filled": self.filled}, os.path.join(out_dir, f"queue{os.environ['RANK']}.pt")
    )
    original_close(self)


pcd.PCDObjective.close = close
small = load_model("builtin:dncnn", in_channels=1, input_shape=dense.input_shape, kwargs={"width": 0.25, "depth": 3})
pcfg = pcd.PCDConfig(queue_size=1024, train=TrainConfig(epochs=1, batch_size=8, device="cpu"))
apply("distill", small, pcfg, Context(data=dense, teacher=denoiser))
