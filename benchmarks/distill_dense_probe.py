"""Why PCD does not help the photo-denoising student (`distill_dense.py`): a probe of its loss.

Trains the half-width student on the same data and budget (960 steps, AdamW 3e-3 cosine, batch 32)
with the task loss plus `weight` x PCD's pixel InfoNCE (the library's heads, adaptor and loss; queue
64), and every 120 steps measures on that batch: the task and PCD losses; the cosine between the
gradients the two losses give the student's weights and the ratio of their norms; and where the
contrastive loss is won: the mean cosine of each student pixel to its teacher pixel (positive), to
the queue (negatives), the teacher pixel's own cosine to the queue and the queue's to itself.

Needs the teacher of `distill_dense.py`, saved by its --teacher-cache:

    python benchmarks/distill_dense.py --seeds 1 --methods plain --teacher-cache /tmp/teacher.pt
    python benchmarks/distill_dense_probe.py /tmp/teacher.pt --weight 0.001 --out results/distill_dense_probe.txt
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distill_dense import DATA, STUDENT, TEACHER, build  # noqa: E402

from compress.data import load_data  # noqa: E402
from compress.distill.losses import pixel_info_nce  # noqa: E402
from compress.distill.pcd import PCDConfig, SpatialAdaptor, _calibrate_head, projection_mlp, student_head  # noqa: E402
from compress.distill.taps import FeatureTaps, shape_of  # noqa: E402
from compress.train.loop import TrainConfig  # noqa: E402


def _flat_grad(loss: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat(
        [(g if g is not None else torch.zeros_like(w)).flatten() for g, w in zip(grads, params, strict=True)]
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("teacher", help="the teacher's state_dict (distill_dense.py --teacher-cache)")
    p.add_argument("--weight", type=float, default=1e-3, help="PCD weight in the trained loss (0: plain)")
    p.add_argument("--layer", default="features")
    p.add_argument("--temperature", type=float, default=0.2)
    p.add_argument("--steps", type=int, default=960)
    p.add_argument("--out")
    args = p.parse_args()
    os.environ.setdefault("COMPRESS_PROGRESS", "0")
    torch.set_num_threads(1)
    data = load_data(DATA)
    teacher = build(data, 0, TEACHER).module
    teacher.load_state_dict(torch.load(args.teacher, weights_only=True))
    teacher.eval().requires_grad_(False)
    student = build(data, 0, STUDENT).module
    cfg = PCDConfig(queue_size=64, teacher_layer=args.layer, student_layer=args.layer, train=TrainConfig(batch_size=32))
    tc = shape_of(teacher, data.input_shape, [args.layer])[args.layer][1]
    sc = shape_of(student, data.input_shape, [args.layer])[args.layer][1]
    torch.manual_seed(0)
    mlp = projection_mlp(tc, cfg.hidden, cfg.dim)
    _calibrate_head(mlp, teacher, args.layer, data, cfg)
    adaptor = SpatialAdaptor.from_mlp(mlp).requires_grad_(False)
    torch.manual_seed(1)
    head = student_head(sc, cfg, cfg.dim)
    opt = torch.optim.AdamW([*student.parameters(), *head.parameters()], 3e-3)
    params = list(student.parameters())
    queue: list[torch.Tensor] = []
    lines = [f"# weight {args.weight}, layer {args.layer}, temperature {args.temperature}, queue 64"]
    g = torch.Generator().manual_seed(0)
    step = 0
    with FeatureTaps(teacher, [args.layer]) as tt, FeatureTaps(student, [args.layer]) as st:
        while step < args.steps:
            for x, y in DataLoader(data.train, batch_size=32, shuffle=True, generator=g):
                student.train()
                head.train()
                for group in opt.param_groups:
                    group["lr"] = 3e-3 * 0.5 * (1 + math.cos(math.pi * step / args.steps))
                out = student(x)
                with torch.no_grad():
                    teacher(x)
                    t = adaptor(tt[args.layer])
                s = head(st[args.layer])
                q = torch.stack(queue[-64:]) if queue else None
                con = pixel_info_nce(s, t, q, args.temperature)
                task = F.mse_loss(out, y)
                if step % 120 == 0 and q is not None:
                    vt = _flat_grad(task, params)
                    vc = _flat_grad(con, params)
                    with torch.no_grad():
                        sn, tn, qn = F.normalize(s, dim=1), F.normalize(t, dim=1), F.normalize(q, dim=1)
                        pos = (sn * tn).sum(1).mean()
                        sq = torch.einsum("bdhw,kd->bkhw", sn, qn).mean()
                        tq = torch.einsum("bdhw,kd->bkhw", tn, qn).mean()
                        qq = (qn @ qn.T).mean()
                    line = (
                        f"step {step} task {float(task.detach()):.5f} pcd {float(con.detach()):.3f} "
                        f"cos(g_task, g_pcd) {float(F.cosine_similarity(vt, vc, 0)):+.3f} "
                        f"|g_pcd|/|g_task| {float(vc.norm() / vt.norm()):.1f} "
                        f"s.t {float(pos):+.3f} s.q {float(sq):+.3f} t.q {float(tq):+.3f} q.q {float(qq):+.3f}"
                    )
                    print(line, flush=True)
                    lines.append(line)
                loss = task + args.weight * con
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                queue.extend(F.normalize(t.mean(dim=(2, 3)), dim=1))
                step += 1
                if step >= args.steps:
                    break
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
