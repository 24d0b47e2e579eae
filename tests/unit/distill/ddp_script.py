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
