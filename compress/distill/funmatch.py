"""Function matching with a patient and consistent teacher (Beyer, Zhai, Royer, Markeeva, Anil and
Kolesnikov, "Knowledge distillation: A good teacher is patient and consistent", CVPR 2022).

Teacher and student see the same augmented pixels: an aggressive random-resized crop (area 5-100%,
aspect 3/4-4/3), an optional horizontal flip, then mixup with one coefficient for the whole batch,
a ~ Beta(1, 1), a = max(a, 1 - a), pairing each image with its neighbour by roll(1). The loss is
T^2 * KL(teacher || student); labels are not used. Schedules are meant to be long (cosine with
warmup, Adam, global-norm clip 1.0) and resumable: every random draw comes from the step's
generator, so a resumed run takes exactly the steps of an uninterrupted one.

Choices where the paper leaves room (all config fields):
  * The crop area scales with the input size. The paper's 5% minimum area at 224 px keeps a crop of
    about 50 x 50 pixels; `min_area` None (the default) keeps that many pixels at any size:
    min_area = clamp((min_crop_side / size)^2, 0.05, 1). At 32 px and below that means no crop at
    all (mixup only): a 5% crop of a 32 px digit (8 x 8 scanned pixels upsampled) is a blur of two
    scan pixels, on which the teacher is confident (mean top probability 0.78) but agrees with the
    label on only 27% of the views, and the student spent its budget matching noise — measured
    in benchmarks/distill_funmatch_cause.py, the cause of the collapse together with the next point.
  * BatchNorm statistics are re-estimated at the end on the student's own training views
    (`recalibrate_on` "views"), not on plain images. Without any re-estimation a torchvision
    mobilenet_v3_small student (BN momentum 0.01) kept running statistics that had moved only
    half-way from their initial values after 3 epochs: one predicted class, 11% on digits. With the
    training loop's recalibration on plain images the student is normalised with statistics it
    never trained under: 63% instead of 82% (crops down to 50%, mixup, 12 epochs). The statistics of
    the views it was trained on are the ones its weights expect; evaluation stays on plain images.
  * `flip` defaults to off: the bundled data are digits, and a mirrored digit is not a digit
    (half the matching budget would go to inputs the student never meets); turn it on for
    natural images, as the paper does.
  * `fixed_teacher` gives the teacher the un-augmented image (the "centre crop" of an image already
    at the training size); its outputs are computed once per training image before the first step
    and looked up afterwards (`cache_teacher`), which is what makes long fixed-teacher runs cheap.
  * `independent` draws the teacher's crop and flip separately from the student's; like
    `consistent`, it uses no mixup (mixup is what `function_matching` adds).
  * Several teachers (`extra_teachers`): the loss is the sum of the KL terms, one per teacher, all on
    the same teacher view.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from compress.distill.common import DistillObjective, check_logits, extra_teachers, prepare, run, with_indices
from compress.distill.losses import kd_loss
from compress.errors import RecipeError
from compress.methods import Context, Result, register_method
from compress.models.model import Model
from compress.train.evaluate import evaluate
from compress.train.loop import TrainConfig, resolve_device

Mode = Literal["function_matching", "consistent", "independent", "fixed_teacher"]


def _patient_schedule() -> TrainConfig:
    return TrainConfig(
        optimizer="adam", lr=1e-3, weight_decay=1e-5, schedule="cosine", warmup_epochs=1.0, grad_clip=1.0
    )


@dataclass
class FunMatchConfig:
    """Patient and consistent distillation.

    Attributes:
        mode: function_matching (same crop + mixup, the paper's method), consistent (same crop),
            independent (a crop per network) or fixed_teacher (teacher on the un-augmented image).
        temperature: softmax temperature T of the KL term (scaled by T^2).
        min_area: smallest random-resized-crop area, as a fraction of the image; None: from the input
            size, so that the smallest crop keeps about `min_crop_side` pixels a side.
        min_crop_side: the side in pixels the smallest crop keeps when `min_area` is None (50: the
            paper's 5% crop at 224 px).
        max_area: largest crop area fraction.
        min_aspect / max_aspect: crop aspect-ratio range (sampled log-uniformly).
        flip: random horizontal flip (off by default: digits; see the module docstring).
        mix: batch mixing in function_matching mode: mixup, cutmix, either (one of the two per step,
            with equal odds) or none.
        mix_alpha: the Beta(alpha, alpha) parameter of the mixing coefficient.
        cache_teacher: in fixed_teacher mode, compute the teacher's outputs once per training image.
        recalibrate_on: after training, re-estimate BatchNorm statistics over `train.bn_recalibration`
            batches of the student's training views (views) or of plain training images (plain).
        extra_teachers: further teachers (run dirs or checkpoints); the KL terms are summed.
        train: the training loop's settings; defaults follow the paper (Adam, clip 1.0, cosine, warmup).
    """

    mode: Mode = "function_matching"
    temperature: float = 1.0
    min_area: float | None = None
    min_crop_side: int = 50
    max_area: float = 1.0
    min_aspect: float = 3 / 4
    max_aspect: float = 4 / 3
    flip: bool = False
    mix: Literal["mixup", "cutmix", "either", "none"] = "mixup"
    mix_alpha: float = 1.0
    cache_teacher: bool = True
    recalibrate_on: Literal["views", "plain"] = "views"
    extra_teachers: list[str] = field(default_factory=list)
    train: TrainConfig = field(default_factory=_patient_schedule)

    def __post_init__(self) -> None:
        lo = 0.05 if self.min_area is None else self.min_area
        if not 0.0 < lo <= self.max_area <= 1.0:
            raise ValueError("need 0 < min_area <= max_area <= 1")
        if not 0.0 < self.min_aspect <= self.max_aspect:
            raise ValueError("need 0 < min_aspect <= max_aspect")
        if self.temperature <= 0 or self.mix_alpha <= 0 or self.min_crop_side < 1:
            raise ValueError("temperature and mix_alpha must be > 0, min_crop_side >= 1")


def crop_min_area(config: FunMatchConfig, size: int) -> float:
    """The smallest crop area for images of `size` pixels: the config's, or scaled with the size."""
    if config.min_area is not None:
        return config.min_area
    return float(min(config.max_area, max(0.05, (config.min_crop_side / size) ** 2)))


def random_resized_crop(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    min_area: float = 0.05,
    max_area: float = 1.0,
    min_aspect: float = 3 / 4,
    max_aspect: float = 4 / 3,
    flip: bool = False,
    tries: int = 10,
) -> torch.Tensor:
    """A random-resized crop (and optional horizontal flip) per image, back to the input size.

    Done as one batched affine resampling; all draws come from `generator` (CPU).
    """
    n, _, h, w = x.shape
    area = torch.empty(n, tries).uniform_(min_area, max_area, generator=generator)
    log_r = torch.empty(n, tries).uniform_(math.log(min_aspect), math.log(max_aspect), generator=generator)
    ratio = log_r.exp()
    cw = torch.sqrt(area * h * w * ratio) / w  # crop width / image width
    ch = torch.sqrt(area * h * w / ratio) / h
    ok = (cw <= 1) & (ch <= 1)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.zeros(n, dtype=torch.long))
    cw = torch.where(ok.any(1), cw.gather(1, first[:, None])[:, 0], torch.ones(n))
    ch = torch.where(ok.any(1), ch.gather(1, first[:, None])[:, 0], torch.ones(n))
    ox = torch.rand(n, generator=generator) * (1 - cw)
    oy = torch.rand(n, generator=generator) * (1 - ch)
    sign = torch.ones(n)
    if flip:
        sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cw * sign
    theta[:, 0, 2] = (ox + cw / 2) * 2 - 1
    theta[:, 1, 1] = ch
    theta[:, 1, 2] = (oy + ch / 2) * 2 - 1
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _beta(generator: torch.Generator, alpha: float) -> float:
    if alpha == 1.0:
        return float(torch.rand(1, generator=generator))
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def mixup(x: torch.Tensor, generator: torch.Generator, alpha: float = 1.0) -> tuple[torch.Tensor, float]:
    """One coefficient a = max(a, 1 - a), a ~ Beta(alpha, alpha), for the batch; partner = roll(x, 1)."""
    a = _beta(generator, alpha)
    a = max(a, 1.0 - a)
    return a * x + (1.0 - a) * torch.roll(x, 1, dims=0), a


def cutmix(x: torch.Tensor, generator: torch.Generator, alpha: float = 1.0) -> tuple[torch.Tensor, float]:
    """Paste one box (area 1 - a of the image) from roll(x, 1) into every image; returns the kept share."""
    a = _beta(generator, alpha)
    a = max(a, 1.0 - a)
    _, _, h, w = x.shape
    side = math.sqrt(1.0 - a)
    bh, bw = int(round(h * side)), int(round(w * side))
    cy = int(torch.randint(0, h, (1,), generator=generator))
    cx = int(torch.randint(0, w, (1,), generator=generator))
    y0, y1 = max(cy - bh // 2, 0), min(cy + bh - bh // 2, h)
    x0, x1 = max(cx - bw // 2, 0), min(cx + bw - bw // 2, w)
    out = x.clone()
    out[:, :, y0:y1, x0:x1] = torch.roll(x, 1, dims=0)[:, :, y0:y1, x0:x1]
    return out, 1.0 - (y1 - y0) * (x1 - x0) / (h * w)


def make_views(
    x: torch.Tensor, config: FunMatchConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(student input, teacher input) for one batch under `config.mode`."""
    crop = {
        "min_area": crop_min_area(config, min(x.shape[-2:])),
        "max_area": config.max_area,
        "min_aspect": config.min_aspect,
        "max_aspect": config.max_aspect,
        "flip": config.flip,
    }
    if config.mode == "fixed_teacher":
        return random_resized_crop(x, generator, **crop), x
    if config.mode == "independent":
        xs = random_resized_crop(x, generator, **crop)
        return xs, random_resized_crop(x, generator, **crop)
    xa = random_resized_crop(x, generator, **crop)
    if config.mode == "function_matching" and config.mix != "none":
        kind = config.mix
        if kind == "either":
            kind = "mixup" if float(torch.rand(1, generator=generator)) < 0.5 else "cutmix"
        xa = (mixup if kind == "mixup" else cutmix)(xa, generator, config.mix_alpha)[0]
    return xa, xa


def recalibrate_on_views(module, dataset, config: FunMatchConfig, batches: int, device) -> bool:
    """Re-estimate every BatchNorm's statistics over `batches` batches of student views of a fixed
    random sample of `dataset` (the same on every DDP rank), through the training loop's own
    recalibration. Leaves the module on `device` in eval mode; False without BatchNorm."""
    from compress.train.loop import recalibrate_batchnorm

    seed, size = config.train.seed, config.train.batch_size

    def view(x, i):
        return make_views(x, config, torch.Generator().manual_seed(seed * 1_000_003 + i))[0]

    done = recalibrate_batchnorm(module.to(device), dataset, batches, size, device, seed, view=view)
    module.eval()  # for the evaluation that follows
    return done


class FunMatchObjective(DistillObjective):
    """KL to the teachers on the views of `config.mode`; in fixed_teacher mode with `cache_teacher`,
    the teachers' outputs on the plain training images come from a table built in `setup` and the
    batches carry their sample index (see `common.with_indices`). Its views are its augmentation, so
    the training loop's `augment` is refused with it (`own_views`)."""

    own_views = True

    def __init__(self, teacher, task: str, config: FunMatchConfig, extra=(), train_set=None) -> None:
        super().__init__(teacher, task, extra_teachers=extra)
        self.config = config
        # the loop re-estimates BatchNorm on plain images; on views, that is done in `funmatch`
        self.recalibrate_bn = config.recalibrate_on == "plain"
        self.train_set = train_set if config.mode == "fixed_teacher" and config.cache_teacher else None
        self.cache: torch.Tensor | None = None

    def setup(self, model, device):
        super().setup(model, device)
        if self.train_set is not None and self.cache is None:
            self.cache = self._teacher_table(device)

    @torch.no_grad()
    def _teacher_table(self, device) -> torch.Tensor:
        """[teachers, samples, classes]: every teacher's logits on every plain training image."""
        rows = []
        for x, *_ in DataLoader(self.train_set, batch_size=256, shuffle=False):
            rows.append(torch.stack(self.teach_all(x.to(device))).float())
        return torch.cat(rows, dim=1)

    def loss(self, model, aux, batch, ctx):
        x = batch[0]
        xs, xt = make_views(x, self.config, ctx.generator)
        zs = model(xs)
        targets = self.cache[:, batch[-1]] if self.cache is not None else self.teach_all(xt)
        loss = sum(kd_loss(zs, zt, self.config.temperature) for zt in targets)
        return loss, {}


@register_method("distill", "funmatch", FunMatchConfig, needs_teacher=True)
def funmatch(model: Model, config: FunMatchConfig, ctx: Context) -> Result:
    """Distill by function matching: same augmented, mixed pixels for both networks; labels unused."""

    out, teacher = prepare(model, ctx, "funmatch")
    if ctx.data.task != "classification":
        raise RecipeError("distill funmatch matches class distributions; for a dense task use pcd")
    extra = extra_teachers(config.extra_teachers, ctx, "funmatch")
    for t in (teacher, *extra):
        check_logits(out.module, t, ctx.data.input_shape)
    size = min(ctx.data.input_shape[1:])
    config = dataclasses.replace(config, min_area=crop_min_area(config, size))
    cached = config.mode == "fixed_teacher" and config.cache_teacher
    objective = FunMatchObjective(teacher, ctx.data.task, config, extra, ctx.data.train if cached else None)
    run_ctx = with_indices(ctx) if cached else ctx
    info = {"min_area": config.min_area, "teachers": 1 + len(extra)}
    result = run(out, objective, run_ctx, config.train, "funmatch", info)
    finished = result.metrics["steps"] > 0 and result.metrics["steps"] == _total_steps(ctx.data.train, config.train)
    if config.recalibrate_on == "views" and config.train.bn_recalibration and finished:
        device = resolve_device(config.train.device)
        if recalibrate_on_views(out.module, ctx.data.train, config, config.train.bn_recalibration, device):
            metrics = evaluate(out.module, ctx.data.val, ctx.data.task, device=device)
            result.metrics.update({k: v for k, v in metrics.items() if k != "samples"}, bn_recalibrated="views")
        out.module.to("cpu").eval()
    return result


def _total_steps(dataset, train: TrainConfig) -> int:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return math.ceil(math.ceil(len(dataset) / world) / train.batch_size) * train.epochs
