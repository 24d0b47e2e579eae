"""Pixel-wise contrastive distillation (PCD: Huang et al., "Pixel-Wise Contrastive Distillation",
ICCV 2023), for dense image-to-image tasks.

Both networks see the same view, so pixels correspond. The teacher's feature map goes through a
`SpatialAdaptor`, its projection MLP (Linear-BN1d-ReLU-Linear) rewritten as 1x1 conv - BN2d (same
statistics) - SpatialReLU - 1x1 conv, so that global-average-pooling the adaptor's output equals the
MLP on the pooled feature. The student's map goes through a trainable head (optionally after a
multi-head self-attention block). Per pixel, with vectors L2-normalised over channels:
    L_i = -log( exp(s_i.t_i / tau) / (exp(s_i.t_i / tau) + sum_k exp(s_i.q_k / tau)) ),
with negatives q_k from a FIFO queue of the teacher's pooled vectors; plus the task loss.

Choices (config fields): a teacher without a projection head (e.g. a denoiser) gets one built over
its tap: a seeded random Linear-BN1d-ReLU-Linear whose BN statistics are measured on the training
data, then frozen (a random projection keeps the teacher's geometry; training it would need the
teacher's own objective). Under DDP every process enqueues the keys of all processes (gathered in
rank order), so the queues stay identical and a step's negatives come from the global batch; the
queue is small by default (256, not the reference 65536) because the datasets here are small. The attention
block sits on the student's map before its head, as a residual pre-norm block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from compress.distill.common import DistillObjective, gather_rows, prepare, run
from compress.distill.losses import pixel_info_nce
from compress.distill.taps import resolve_layers, shape_of
from compress.errors import ModelError, RecipeError
from compress.methods import Context, Result, register_method
from compress.models.model import Model
from compress.train.loop import TrainConfig


@dataclass
class PCDConfig:
    """Pixel-wise contrastive distillation.

    Attributes:
        teacher_layer / student_layer: the feature maps; "auto": the deepest stage output.
        teacher_head: name of the teacher's projection MLP (an nn.Sequential Linear-BN1d-ReLU-Linear);
            None: build a frozen random one over the teacher's map (see the module docstring).
        dim: embedding width of a built head (and of the student's head).
        hidden: hidden width of both heads.
        temperature: InfoNCE temperature tau.
        queue_size: negatives kept (teacher pooled vectors, FIFO).
        attention: add a multi-head self-attention block on the student's map.
        attention_heads: its number of heads (must divide the student map's channels).
        distill_weight / task_weight: weights of the contrastive and the task loss.
        calib_batches: training batches used to measure a built head's BN statistics.
        train: the training loop's settings.
    """

    teacher_layer: str = "auto"
    student_layer: str = "auto"
    teacher_head: str | None = None
    dim: int = 64
    hidden: int = 128
    temperature: float = 0.2
    queue_size: int = 256
    attention: bool = False
    attention_heads: int = 4
    distill_weight: float = 0.01
    task_weight: float = 1.0
    calib_batches: int = 8
    train: TrainConfig = field(default_factory=TrainConfig)


class SpatialReLU(nn.Module):
    """x_c * 1[sum over H, W of x_c > 0]: a ReLU decided per channel on the pooled value."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (x.sum(dim=(2, 3), keepdim=True) > 0).to(x.dtype)


class SpatialAdaptor(nn.Sequential):
    """A projection MLP (Linear-BN1d-ReLU-Linear) made spatial: 1x1 conv - BN2d - SpatialReLU - 1x1 conv.

    In eval mode, GAP(adaptor(x)) == mlp(GAP(x)).
    """

    @classmethod
    def from_mlp(cls, mlp: nn.Sequential) -> SpatialAdaptor:
        layers = list(mlp)
        kinds = [type(m) for m in layers]
        if kinds != [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]:
            names = ", ".join(k.__name__ for k in kinds)
            raise ModelError(f"a projection head must be Linear-BatchNorm1d-ReLU-Linear, got {names}")
        fc1, bn1, _, fc2 = layers
        conv1 = nn.Conv2d(fc1.in_features, fc1.out_features, 1, bias=fc1.bias is not None)
        conv2 = nn.Conv2d(fc2.in_features, fc2.out_features, 1, bias=fc2.bias is not None)
        bn = nn.BatchNorm2d(bn1.num_features, eps=bn1.eps, momentum=bn1.momentum, affine=bn1.affine)
        with torch.no_grad():
            conv1.weight.copy_(fc1.weight[:, :, None, None])
            conv2.weight.copy_(fc2.weight[:, :, None, None])
            if fc1.bias is not None:
                conv1.bias.copy_(fc1.bias)
            if fc2.bias is not None:
                conv2.bias.copy_(fc2.bias)
        bn.load_state_dict(bn1.state_dict())
        return cls(conv1, bn, SpatialReLU(), conv2).eval()


def projection_mlp(cin: int, hidden: int, dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cin, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, dim))


class SelfAttention2d(nn.Module):
    """Residual pre-norm multi-head self-attention over the pixels of a [B, C, H, W] map."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x.flatten(2).transpose(1, 2))
        out = self.attn(tokens, tokens, tokens, need_weights=False)[0]
        return x + out.transpose(1, 2).reshape(b, c, h, w)


def student_head(channels: int, config: PCDConfig, dim: int) -> nn.Module:
    layers: list[nn.Module] = []
    if config.attention:
        if channels % config.attention_heads:
            raise RecipeError(f"attention_heads {config.attention_heads} must divide the student's {channels} channels")
        layers.append(SelfAttention2d(channels, config.attention_heads))
    layers += [
        nn.Conv2d(channels, config.hidden, 1),
        nn.BatchNorm2d(config.hidden),
        nn.ReLU(),
        nn.Conv2d(config.hidden, dim, 1),
    ]
    return nn.Sequential(*layers)


@torch.no_grad()
def _calibrate_head(mlp: nn.Sequential, teacher: nn.Module, layer: str, data, config: PCDConfig) -> None:
    """Measure the built head's BN1d statistics on the teacher's pooled features (cumulative mean)."""
    from compress.distill.taps import FeatureTaps

    bn = mlp[1]
    bn.reset_running_stats()
    bn.momentum = None
    mlp.train()
    loader = DataLoader(data.train, batch_size=max(2, config.train.batch_size), shuffle=False)
    with FeatureTaps(teacher, [layer]) as taps:
        for i, (x, _) in enumerate(loader):
            if i >= config.calib_batches:
                break
            teacher(x)
            mlp(taps[layer].mean(dim=(2, 3)))
    bn.momentum = 0.1
    mlp.eval()


class PCDObjective(DistillObjective):
    def __init__(
        self, teacher, task, tlayer, slayer, adaptor: SpatialAdaptor, head: nn.Module, config: PCDConfig
    ) -> None:
        super().__init__(teacher, task, [tlayer], [slayer])
        self.adaptor, self.head, self.config = adaptor, head, config
        dim = adaptor[-1].out_channels
        self.queue = torch.zeros(config.queue_size, dim)
        self.filled = 0
        self.ptr = 0

    def modules(self):
        return {"student_head": self.head}

    def setup(self, model, device):
        super().setup(model, device)
        self.adaptor.to(device).eval()
        self.queue = self.queue.to(device)

    def loss(self, model, aux, batch, ctx):
        c = self.config
        x, y = batch
        out = model(x)
        with torch.no_grad():
            self.teach(x)
            self.adaptor.eval()
            t = self.adaptor(self.teacher_taps.features()[0])
        s = aux["student_head"](self.student_taps.features()[0])
        if s.shape[2:] != t.shape[2:]:
            s = F.interpolate(s, size=t.shape[2:], mode="bilinear", align_corners=False)
        queue = self.queue[: self.filled] if self.filled else None
        con = pixel_info_nce(s, t, queue, c.temperature)
        task = self.task.loss(out, y)
        self._enqueue(gather_rows(F.normalize(t.mean(dim=(2, 3)), dim=1)))
        return c.task_weight * task + c.distill_weight * con, {"pcd": float(con.detach())}

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        k = keys[: self.queue.shape[0]]
        idx = (self.ptr + torch.arange(len(k), device=k.device)) % self.queue.shape[0]
        self.queue[idx] = k.to(self.queue.dtype)
        self.ptr = int((self.ptr + len(k)) % self.queue.shape[0])
        self.filled = min(self.filled + len(k), self.queue.shape[0])

    def state_dict(self) -> dict[str, Any]:
        return {"queue": self.queue.detach().cpu(), "filled": self.filled, "ptr": self.ptr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.queue = state["queue"].to(self.queue.device)
        self.filled, self.ptr = int(state["filled"]), int(state["ptr"])


@register_method("distill", "pcd", PCDConfig, needs_teacher=True)
def pcd(model: Model, config: PCDConfig, ctx: Context) -> Result:
    """Train a dense student with the task loss plus pixel-wise contrastive matching of the teacher."""
    if config.queue_size < 1 or config.temperature <= 0:
        raise RecipeError("distill pcd needs queue_size >= 1 and temperature > 0")
    out, teacher = prepare(model, ctx, "pcd")
    shape = ctx.data.input_shape
    tl = resolve_layers(teacher, config.teacher_layer, shape, role="teacher", max_layers=1)[0]
    sl = resolve_layers(out.module, config.student_layer, shape, role="student", max_layers=1)[0]
    tshape, sshape = shape_of(teacher, shape, [tl])[tl], shape_of(out.module, shape, [sl])[sl]
    if len(tshape) != 4 or len(sshape) != 4:
        raise RecipeError(f"distill pcd needs feature maps; {tl} gives {tshape[1:]}, {sl} gives {sshape[1:]}")
    if config.teacher_head is not None:
        mods = dict(teacher.named_modules())
        if config.teacher_head not in mods:
            raise RecipeError(f"the teacher has no module '{config.teacher_head}' (teacher_head)")
        mlp = mods[config.teacher_head]
    else:
        with torch.random.fork_rng():
            torch.manual_seed(config.train.seed)  # identical on every DDP rank
            mlp = projection_mlp(tshape[1], config.hidden, config.dim)
        _calibrate_head(mlp, teacher, tl, ctx.data, config)
    adaptor = SpatialAdaptor.from_mlp(mlp)
    adaptor.requires_grad_(False)
    with torch.random.fork_rng():
        torch.manual_seed(config.train.seed + 1)
        head = student_head(sshape[1], config, adaptor[-1].out_channels)
    objective = PCDObjective(teacher, ctx.data.task, tl, sl, adaptor, head, config)
    return run(out, objective, ctx, config.train, "pcd", {"layers": [tl, sl]})
