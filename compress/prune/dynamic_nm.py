"""Dynamic N:M sparsity per input (ClassPruning, arXiv 2211.05488; ClassSR-style routing losses).

A light difficulty classifier (the router: two strided convolutions, global pooling, a linear
layer) reads each input and picks one of several nested N:M levels of one shared weight set, e.g.
1:4 / 2:4 / 4:4 (4:4 = dense). Magnitude top-N masks for the same M are nested (top-1 within top-2
within top-4), computed once from the dense weights, so every level uses a subset of the same weights.

Training (soft routing): the expected loss sum_c P_c(x) L(f(x; W * M_c)) (see `RoutingObjective`; not
ClassSR's loss of the mixed output, which let levels compensate for each other) + `onehot_weight` * the
ClassSR class loss (-sum_c |P_c - 1/L|, pushes P towards one-hot) + `balance_weight` * the average
loss (sum_c |mean_b P_c - share_c|, keeps the share of inputs at each level near `shares`). The
routing weights and the shared weights train together. Each level keeps its own BatchNorm running
statistics (activations of a sparser level differ in scale); the affine parameters are shared.
Inference (hard routing): the level with the highest P. Exact ClassPruning losses are not published;
these are ClassSR's.

Deployment: the routed model exports to one ONNX graph that computes every level and selects each
sample's output by the router's argmax with Equal/Where nodes (so ONNX Runtime runs it end to end and
the parity check compares it with torch). That graph does L times the work on CPU: ONNX Runtime has no
N:M kernels, and data-dependent skipping would need an If node per batch (one level for the whole
batch), not per sample. The FLOPs reported are those a sparse kernel would execute for each level
(dense MACs of a masked layer x N/M, plus the router), not what ORT runs; only 2:4 has hardware support.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from compress.config import to_dict
from compress.errors import RecipeError
from compress.methods import Context, Result, register_method
from compress.models.model import Model
from compress.prune.common import input_shape_for, write_json
from compress.prune.nm import CPU_NOTE, layer_mask, nm_layers
from compress.sparsity.check import torch_kind
from compress.train.loop import Objective, TrainConfig, train


@dataclass
class DynamicNMConfig:
    """Dynamic N:M (ClassPruning).

    Attributes:
        levels: nested N:M levels, sparsest first after sorting, all with the same M ("4:4" is dense).
        shares: target share of inputs at each level (sorted like the levels; default: equal).
        onehot_weight: weight of the one-hot (class) loss.
        balance_weight: weight of the balance (average) loss.
        level_weight: every level's own loss also counts with this uniform weight (keeps each level usable).
        router_width: channels of the router's convolutions.
        train: joint training of the shared weights and the router.
        min_params, ignore: layers left dense at every level (reported).
        export_batch_parity: check ONNX against torch on this many inputs.
    """

    levels: list[str] = field(default_factory=lambda: ["1:4", "2:4", "4:4"], metadata={"cli_sep": ","})
    shares: list[float] | None = None
    onehot_weight: float = 0.1
    balance_weight: float = 0.5
    level_weight: float = 0.5
    router_width: int = 8
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3))
    min_params: int = 0
    ignore: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        parsed = [parse_level(v) for v in self.levels]
        if len(parsed) < 2:
            raise ValueError("dynamic-nm needs at least two levels, e.g. 2:4,4:4")
        if len({m for _, m in parsed}) != 1:
            raise ValueError(f"dynamic-nm levels must share one M to be nested, got {','.join(self.levels)}")
        if len(set(parsed)) != len(parsed):
            raise ValueError(f"dynamic-nm levels repeat: {','.join(self.levels)}")
        bad_shares = self.shares is not None and (
            len(self.shares) != len(parsed) or any(s < 0 for s in self.shares) or not sum(self.shares) > 0
        )
        if bad_shares:
            raise ValueError("shares: one non-negative share per level, not all zero")
        if min(self.onehot_weight, self.balance_weight, self.level_weight) < 0 or self.router_width < 1:
            raise ValueError("onehot_weight, balance_weight and level_weight must be >= 0, router_width >= 1")


def parse_level(text: str) -> tuple[int, int]:
    try:
        n, m = (int(v) for v in str(text).split(":"))
    except ValueError:
        raise ValueError(f"a level must look like N:M (e.g. 2:4), got '{text}'") from None
    if not 0 < n <= m:
        raise ValueError(f"a level N:M needs 0 < N <= M, got '{text}'")
    return n, m


class Router(nn.Module):
    """Difficulty classifier: conv(s2) - ReLU - conv(s2) - ReLU - global average - linear -> level logits."""

    def __init__(self, in_channels: int, levels: int, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, 2, 1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class RoutedNM(nn.Module):
    """One shared network, L nested N:M masks, a router; soft mixture in training, hard choice in eval."""

    def __init__(self, base: nn.Module, router: Router, levels: list[tuple[int, int]], masked: dict[str, nn.Module]):
        super().__init__()
        self.base = base
        self.router = router
        self.levels = [f"{n}:{m}" for n, m in levels]
        self.masked = list(masked)
        for li, (n, m) in enumerate(levels):
            for name, mod in masked.items():
                mask = torch.ones_like(mod.weight, dtype=torch.bool) if n == m else layer_mask(mod, n, m)
                self.register_buffer(_key("mask", li, name), mask)
            for bname, buf in base.named_buffers():
                self.register_buffer(_key("buf", li, bname), buf.detach().clone())
        self.forced: int | None = None  # evaluate one level for every input (static baseline of the same weights)

    def level_state(self, li: int) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        for name in self.masked:
            w = self.base.get_submodule(name).weight
            state[f"{name}.weight"] = w * getattr(self, _key("mask", li, name))
        for bname, _ in self.base.named_buffers():
            state[bname] = getattr(self, _key("buf", li, bname))
        return state

    def run_level(self, li: int, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, self.level_state(li), (x,))

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.router(x), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.forced is not None:
            return self.run_level(self.forced, x)
        if self.training:
            p = self.probabilities(x)
            out = None
            for li in range(len(self.levels)):
                y = self.run_level(li, x)
                w = p[:, li].reshape(-1, *([1] * (y.dim() - 1)))
                out = y * w if out is None else out + y * w
            return out
        choice = self.router(x).argmax(dim=1)
        out = self.run_level(0, x)
        for li in range(1, len(self.levels)):
            y = self.run_level(li, x)
            pick = (choice == li).reshape(-1, *([1] * (y.dim() - 1)))
            out = torch.where(pick, y, out)
        return out

    def deployable(self) -> DeployedRouted:
        """Plain modules for export: one copy of the network per level with its mask folded in."""
        nets = []
        for li in range(len(self.levels)):
            net = copy.deepcopy(self.base)
            state = {k: v.detach() for k, v in self.level_state(li).items()}
            net.load_state_dict({**net.state_dict(), **state})
            nets.append(net.eval())
        return DeployedRouted(copy.deepcopy(self.router), nets).eval()


class DeployedRouted(nn.Module):
    """Hard routing with plain layers: every level's network runs, Equal/Where keep each sample's choice."""

    def __init__(self, router: Router, nets: list[nn.Module]) -> None:
        super().__init__()
        self.router = router
        self.nets = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        choice = self.router(x).argmax(dim=1)
        out = self.nets[0](x)
        for li in range(1, len(self.nets)):
            y = self.nets[li](x)
            out = torch.where((choice == li).reshape(-1, *([1] * (y.dim() - 1))), y, out)
        return out


def _key(kind: str, level: int, name: str) -> str:
    return f"{kind}{level}__{name.replace('.', '_')}"


def per_sample_loss(task: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if task == "classification":
        return F.cross_entropy(pred, target, reduction="none")
    return ((pred - target) ** 2).flatten(1).mean(dim=1)


class RoutingObjective(Objective):
    """Expected task loss over the routing + one-hot loss + balance loss.

    Every level runs on the batch. The shared weights minimise sum_c (P_c + level_weight / L) * L_c, each
    level trained on the inputs routed to it plus a uniform share (so every level stays usable on its
    own); the router minimises sum_c P_c * (L_c - L_dense) / mean(L) (losses detached; the extra loss of
    each level over the densest in units of the batch's mean loss, so the routing signal does not depend
    on the task's loss scale). A mixture of outputs (ClassSR's sum_c P_c y_c) let levels compensate for each other,
    which left single levels poor under hard routing (measured: the dense level 6 dB below dense).
    """

    def __init__(self, task: str, config: DynamicNMConfig, shares: torch.Tensor) -> None:
        self.task_name = task
        self.config = config
        self.shares = shares
        self.recalibrate_bn = False  # each level keeps its own statistics

    def loss(self, model, aux, batch, ctx):
        x, y = batch
        p = model.probabilities(x)
        levels = len(model.levels)
        losses = torch.stack([per_sample_loss(self.task_name, model.run_level(li, x), y) for li in range(levels)], 1)
        weights = p.detach() + self.config.level_weight / levels
        task_loss = (weights * losses).sum(dim=1).mean()
        # each level's extra loss over the densest, in units of the batch's mean loss (scale-free; a per-sample
        # ratio explodes where the dense loss is ~0, as on a well-fit classifier, and pins every input dense)
        relative = ((losses - losses[:, -1:]) / losses.mean().clamp(min=1e-8)).detach()
        router_loss = (p * relative).sum(dim=1).mean()
        uniform = 1.0 / levels
        onehot = -(p - uniform).abs().sum(dim=1).mean()
        balance = (p.mean(dim=0) - self.shares.to(p.device)).abs().sum()
        loss = task_loss + router_loss + self.config.onehot_weight * onehot + self.config.balance_weight * balance
        return loss, {"task": float(task_loss.detach()), "balance": float(balance.detach())}


def layer_macs(module: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """MACs of one sample through every Conv / Linear (forward hooks on a single pass)."""
    macs: dict[str, int] = {}
    hooks = []
    for name, mod in module.named_modules():
        kind = torch_kind(mod)
        if kind is None:
            continue

        def hook(m, args, out, _name=name, _kind=kind):
            per_out = m.weight[0].numel() if _kind != "conv_transpose" else m.weight.numel() // m.weight.shape[0]
            if _kind == "conv_transpose":
                macs[_name] = int(args[0][0].numel() * per_out)
            else:
                macs[_name] = int(out[0].numel() * per_out)

        hooks.append(mod.register_forward_hook(hook))
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(torch.zeros(1, *input_shape))
    finally:
        module.train(was)
        for h in hooks:
            h.remove()
    return macs


def level_flops(
    base: nn.Module, router: nn.Module, masked: list[str], levels: list[tuple[int, int]], shape: tuple[int, ...]
) -> dict[str, Any]:
    per_layer = layer_macs(base, shape)
    dense = sum(per_layer.values())
    router_macs = sum(layer_macs(router, shape).values())
    per_level = []
    for n, m in levels:
        sparse = sum(per_layer[k] for k in masked)
        per_level.append(int(dense - sparse + sparse * n / m + router_macs))
    return {"dense_macs": dense, "router_macs": router_macs, "level_macs": per_level}


@torch.no_grad()
def level_shares(model: RoutedNM, dataset, batch_size: int = 256) -> list[float]:
    counts = torch.zeros(len(model.levels))
    model.eval()
    for batch in torch.utils.data.DataLoader(dataset, batch_size=batch_size):
        choice = model.router(batch[0]).argmax(dim=1)
        counts += torch.bincount(choice, minlength=len(model.levels)).float()
    return (counts / counts.sum().clamp(min=1)).tolist()


def build_routed(model: Model, config: DynamicNMConfig, shape: tuple[int, ...]) -> tuple[RoutedNM, list[dict]]:
    levels = sorted((parse_level(v) for v in config.levels), key=lambda t: t[0] / t[1])
    m = levels[0][1]
    base = copy.deepcopy(model.module)
    masked, skipped = nm_layers(base, m, ignore=config.ignore, min_params=config.min_params)
    if not masked:
        raise RecipeError(
            f"dynamic-nm: no layer can carry an N:{m} pattern ({skipped[0]['reason'] if skipped else ''})"
        )
    if len(shape) != 3:
        raise RecipeError(f"dynamic-nm routes images (C, H, W); got input shape {list(shape)}")
    router = Router(shape[0], len(levels), config.router_width)
    return RoutedNM(base, router, levels, masked), skipped


def run_dynamic_nm(model: Model, config: DynamicNMConfig, ctx: Context) -> tuple[RoutedNM, dict[str, Any]]:
    from compress.train.evaluate import evaluate

    data = ctx.data
    shape = input_shape_for(model, ctx)
    routed, skipped = build_routed(model, config, shape)
    levels = [parse_level(v) for v in routed.levels]
    shares = torch.tensor(config.shares if config.shares is not None else [1.0] * len(levels), dtype=torch.float32)
    shares = shares / shares.sum()
    if config.shares is not None:  # given in the config's level order; sort like the levels
        order = sorted(range(len(config.levels)), key=lambda i: parse_level(config.levels[i])[0])
        shares = shares[order]
    dense = {k: v for k, v in evaluate(model.module, data.val, data.task).items() if k != "samples"}
    objective = RoutingObjective(data.task, config, shares)
    result = train(routed, data, config.train, objective=objective, checkpoint=ctx.checkpoint("dynamic_nm"))
    routed.eval()
    routed_metrics = {k: v for k, v in result.metrics.items() if k != "samples"}
    per_level_quality = []
    for li in range(len(levels)):
        routed.forced = li
        per_level_quality.append({k: v for k, v in evaluate(routed, data.val, data.task).items() if k != "samples"})
    routed.forced = None
    flops = level_flops(routed.base, routed.router, routed.masked, levels, shape)
    share = level_shares(routed, data.val)
    avg = sum(s * f for s, f in zip(share, flops["level_macs"], strict=True))
    key = "psnr" if "psnr" in dense else "accuracy" if "accuracy" in dense else next(iter(dense))
    metrics = {
        "levels": routed.levels,
        "level_macs": flops["level_macs"],
        "dense_macs": flops["dense_macs"],
        "router_macs": flops["router_macs"],
        "level_share": share,
        "avg_macs": avg,
        "flops_saved": 1.0 - avg / max(flops["dense_macs"], 1),
        "quality_metric": key,
        "dense_quality": dense.get(key),
        "routed_quality": routed_metrics.get(key),
        "quality_drop": (dense.get(key) or 0.0) - (routed_metrics.get(key) or 0.0),
        "level_quality": [q.get(key) for q in per_level_quality],
        "masked_layers": len(routed.masked),
        "ineligible": skipped,
        "sparse_kernels": CPU_NOTE + "; the exported graph computes every level and selects per sample",
        **{f"val_{k}": v for k, v in routed_metrics.items()},
    }
    return routed, metrics


@register_method("prune", "dynamic-nm", DynamicNMConfig)
def dynamic_nm(model: Model, config: DynamicNMConfig, ctx: Context) -> Result:
    """Route each input to one of several nested N:M levels of one weight set; exports the routed graph."""
    from compress.export.onnx import ExportConfig, export_onnx

    routed, metrics = run_dynamic_nm(model, config, ctx)
    shape = input_shape_for(model, ctx)
    wrapped = Model(routed.deployable(), dict(model.arch), tuple(shape), model.task, [], dict(model.preprocessing))
    workdir = ctx.workdir
    if workdir is None:
        import tempfile

        workdir = __import__("pathlib").Path(tempfile.mkdtemp(prefix="dynamic_nm_"))
    workdir.mkdir(parents=True, exist_ok=True)
    onnx_path = workdir / "routed.onnx"
    report = export_onnx(wrapped, onnx_path, ExportConfig(exporter="torchscript"))
    metrics["export"] = {"exporter": report["exporter"], "parity": report["parity"]}
    metrics["macs"] = int(math.ceil(metrics["avg_macs"]))
    state = workdir / "routed_state.pt"
    torch.save({"levels": routed.levels, "state_dict": routed.state_dict()}, state)
    files = write_json(ctx, "dynamic_nm_report.json", {"config": to_dict(config), "metrics": metrics})
    files["routed_state"] = state
    return Result(model=None, onnx=onnx_path, metrics=metrics, files=files)
