"""Why CRD trails the student trained alone on the `cnn` digits grid: one seed, one variant at a time.

Each variant is the benchmark's CRD cell (digits 16x16 grey, 600 images, resnet_tiny -> simple_cnn
width 0.25, AdamW lr 5e-3, batch 32) with some CRDConfig fields changed. Besides accuracy it records,
every 19 steps, the gradient that the contrastive term and the task term each send to the student's
weights (norm ratio, cosine), the contrastive loss, and how many of the anchor's negatives have the
anchor's class.

    python benchmarks/distill_crd_probe.py --epochs 12 --seeds 0,1,2 --out results/distill_crd_probe_12ep.json \
        --variants kd,crd_alone,crd+kd,ce+kd,t0.5,fill,other_class
    python benchmarks/distill_crd_probe.py --epochs 48 --seeds 0,1,2 --out results/distill_crd_probe_48ep.json \
        --variants kd,crd_alone,crd+kd,ce+kd,fill+kd

`kd` is KDConfig's default (alpha 0.9 on KD, 0.1 on the task); `ce+kd` is CRD's weights without the
contrastive term (task 1 + KD 1); `fill` writes every image's initial embeddings to the banks
before the first step instead of random vectors; `other_class` draws negatives from the other
classes only (uses labels: not the paper, a diagnostic for same-class negatives).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from compress.data import DataConfig, load_data  # noqa: E402
from compress.distill import crd as crd_module  # noqa: E402
from compress.distill.crd import CRDConfig  # noqa: E402
from compress.distill.kd import KDConfig  # noqa: E402
from compress.methods import Context, apply  # noqa: E402
from compress.models.sources import load_model  # noqa: E402
from compress.train.loop import TrainConfig, train  # noqa: E402

# every variant starts from CRD alone (kd_weight 0; CRDConfig's default is CRD+KD since this probe)
VARIANTS = {
    "crd_alone": {},
    "weight0": {"crd_weight": 0.0},
    "t0.5": {"temperature": 0.5},
    "w0.1": {"crd_weight": 0.1},
    "neg64": {"negatives": 64},
    "crd+kd": {"kd_weight": 1.0},
    "ce+kd": {"kd_weight": 1.0, "crd_weight": 0.0},
    "mom0": {"momentum": 0.0},
    "mom0.9": {"momentum": 0.9},
    "t0.2": {"temperature": 0.2},
}
DIAG = []
# probe-only variants, not CRDConfig fields: "fill" writes every image's initial embedding to both
# banks before the first step (instead of random vectors); "other_class" draws negatives from the
# other classes only (label-aware: not the paper, a diagnostic for class collisions)
PROBE = {"fill+kd": ({"kd_weight": 1.0}, {"fill"}), "fill": ({}, {"fill"}), "other_class": ({}, {"other_class"}),
         "other_class+kd": ({"kd_weight": 1.0}, {"other_class"})}  # fmt: skip
ACTIVE: set[str] = set()


def _diagnose(loss_fn):
    """Wrap CRDObjective.loss: every 19th step, the task and contrastive gradients on the student."""

    def loss(self, model, aux, batch, ctx):
        total, stats = loss_fn(self, model, aux, batch, ctx)
        if ctx.step % 19 == 0:
            params = [p for p in model.parameters() if p.requires_grad]
            x, y, idx = batch
            out = model(x)
            self.teach(x)
            vs = F.normalize(aux["embed_s"](crd_module._pooled(self.student_taps.features()[0])), dim=1)
            g = torch.Generator().manual_seed(ctx.step)
            neg = (idx[:, None] + torch.randint(1, self.n, (len(idx), self.k), generator=g)) % self.n
            c = crd_module.contrast(vs, self.memory_t, idx, neg, self.config.temperature)
            task = self.task.loss(out, y)
            gt = torch.autograd.grad(self.config.task_weight * task, params, retain_graph=True)
            gc = torch.autograd.grad(self.config.crd_weight * 2 * c, params, allow_unused=True)
            gt = torch.cat([a.flatten() for a in gt])
            gc = torch.cat(
                [(b if b is not None else torch.zeros_like(p)).flatten() for b, p in zip(gc, params, strict=True)]
            )
            labels = self.labels.to(idx.device)
            same = (labels[neg] == labels[idx][:, None]).float().mean()
            with torch.no_grad():
                pos = (vs * self.memory_t[idx]).sum(1).mean()
                vt = F.normalize(aux["embed_t"](crd_module._pooled(self.teacher_taps.features()[0])), dim=1)
                fresh = (vs * vt).sum(1).mean()
                bank_mean = self.memory_t.mean(0).norm() ** 2  # mean pairwise cosine of the teacher bank
                logits = (vs @ self.memory_t.T).gather(1, torch.cat([idx[:, None], neg], 1))
                top1 = (logits.argmax(1) == 0).float().mean()
            DIAG.append(
                {
                    "step": ctx.step,
                    "task": float(task.detach()),
                    "crd_term": float(c.detach()),
                    "grad_ratio": float(gc.norm() / gt.norm().clamp_min(1e-12)),
                    "grad_cos": float(F.cosine_similarity(gc, gt, dim=0)),
                    "same_class_negatives": float(same),
                    "pos_sim": float(pos),
                    "fresh_sim": float(fresh),
                    "bank_mean_cos": float(bank_mean),
                    "top1": float(top1),
                }
            )
        return total, stats

    return loss


def _patch_setup(data, labels):
    setup = crd_module.CRDObjective.setup

    def patched(self, model, device):
        setup(self, model, device)
        if "fill" not in ACTIVE:
            return
        state = {k: v.clone() for k, v in model.state_dict().items()}
        with torch.no_grad():
            xs = torch.stack([data.train[i][0] for i in range(len(data.train))]).to(device)
            for lo in range(0, len(xs), 64):
                xb = xs[lo : lo + 64]
                model(xb)
                self.teach(xb)
                vs = F.normalize(self.heads["embed_s"](crd_module._pooled(self.student_taps.features()[0])), dim=1)
                vt = F.normalize(self.heads["embed_t"](crd_module._pooled(self.teacher_taps.features()[0])), dim=1)
                self.memory_s[lo : lo + 64], self.memory_t[lo : lo + 64] = vs, vt
        model.load_state_dict(state)  # BN running stats as they were

    crd_module.CRDObjective.setup = patched


def _patch_negatives(labels):
    randint = torch.randint

    def other_class(low, high, size, generator=None, **kw):
        shift = randint(low, high, size, generator=generator, **kw)
        if "other_class" not in ACTIVE or not isinstance(size, tuple) or len(size) != 2:
            return shift
        idx = CURRENT["idx"]
        n = len(labels)
        for _ in range(20):  # redraw shifts that land on the anchor's class
            bad = labels[(idx[:, None] + shift) % n] == labels[idx][:, None]
            if not bad.any():
                break
            shift = torch.where(bad, randint(low, high, size, generator=generator, **kw), shift)
        return shift

    crd_module.torch.randint = other_class


CURRENT: dict = {}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seeds", default="0")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="results/distill_crd_probe.json")
    args = p.parse_args()
    os.environ.setdefault("COMPRESS_PROGRESS", "0")
    torch.set_num_threads(args.threads)
    data = load_data(DataConfig(name="digits", image_size=16, channels=1, limit=600))
    teacher = load_model(
        "builtin:resnet_tiny", num_classes=10, input_shape=data.input_shape, kwargs={"width": 1.0}, seed=0
    )
    t_acc = train(teacher.module, data, TrainConfig(epochs=10, batch_size=32, lr=4e-3), show_progress=False)
    t_acc = t_acc.metrics["accuracy"]
    labels = torch.tensor([int(data.train[i][1]) for i in range(len(data.train))])
    crd_module.CRDObjective.labels = labels
    original = crd_module.CRDObjective.loss
    diag_loss = _diagnose(original)

    def loss(self, model, aux, batch, ctx):
        CURRENT["idx"] = batch[2]
        return diag_loss(self, model, aux, batch, ctx)

    crd_module.CRDObjective.loss = loss
    _patch_setup(data, labels)
    _patch_negatives(labels)
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        student = load_model("builtin:simple_cnn", num_classes=10, input_shape=data.input_shape,
                             kwargs={"width": 0.25}, seed=seed)  # fmt: skip
        tc = TrainConfig(epochs=args.epochs, batch_size=32, lr=5e-3, seed=seed)
        s0 = time.perf_counter()
        acc = train(student.module, data, tc, show_progress=False).metrics["accuracy"]
        rows.append({"variant": "scratch", "seed": seed, "accuracy": acc, "seconds": round(time.perf_counter() - s0)})
        print(rows[-1], flush=True)
        for name in args.variants.split(","):
            DIAG.clear()
            if name == "kd":
                student = load_model("builtin:simple_cnn", num_classes=10, input_shape=data.input_shape,
                                     kwargs={"width": 0.25}, seed=seed)  # fmt: skip
                kc = KDConfig(train=TrainConfig(epochs=args.epochs, batch_size=32, lr=5e-3, seed=seed))
                acc = apply("distill", student, kc, Context(data=data, teacher=teacher)).metrics["accuracy"]
                rows.append({"variant": "kd", "seed": seed, "accuracy": acc})
                print(rows[-1], flush=True)
                continue
            student = load_model("builtin:simple_cnn", num_classes=10, input_shape=data.input_shape,
                                 kwargs={"width": 0.25}, seed=seed)  # fmt: skip
            over, flags = PROBE.get(name, (VARIANTS.get(name), set()))
            ACTIVE.clear()
            ACTIVE.update(flags)
            cfg = CRDConfig(
                **{"kd_weight": 0.0, **over}, train=TrainConfig(epochs=args.epochs, batch_size=32, lr=5e-3, seed=seed)
            )
            s0 = time.perf_counter()
            res = apply("distill", student, cfg, Context(data=data, teacher=teacher))
            diag = {k: [round(d[k], 3) for d in DIAG] for k in DIAG[0]} if DIAG else {}
            summary = {k: round(statistics.mean(v), 3) for k, v in diag.items() if k != "step"}
            overrides = {**over, **{f: True for f in flags}}
            rows.append({"variant": name, "seed": seed, "overrides": overrides, "accuracy": res.metrics["accuracy"],
                         "seconds": round(time.perf_counter() - s0), "diag_mean": summary, "diag": diag})  # fmt: skip
            print({k: v for k, v in rows[-1].items() if k != "diag"}, flush=True)
    write_result(
        args.out, {"benchmark": "distill_crd_probe", "epochs": args.epochs, "teacher_accuracy": t_acc, "runs": rows}
    )


if __name__ == "__main__":
    main()
