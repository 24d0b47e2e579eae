"""Wall time of the main job and its report, stamped with the machine and versions.

python benchmarks/quickstart_time.py --out results/quickstart.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/quickstart.json")
    ap.add_argument("--recipe", default=str(Path(__file__).parents[1] / "recipes" / "quickstart.yaml"))
    args = ap.parse_args()

    from compress.pipeline import run_recipe
    from compress.recipe import load_recipe

    tmp = Path(tempfile.mkdtemp())
    try:
        start = time.perf_counter()
        out = run_recipe(load_recipe(args.recipe), tmp / "quick")
        wall = time.perf_counter() - start
        report = json.loads((out / "report" / "report.json").read_text())
        md = (out / "report" / "report.md").read_text()
        steps = {
            v: json.loads((out / "variants" / v / "manifest.json").read_text())["metrics"].get("wall_s")
            for v in json.loads((out / "manifest.json").read_text())["variants"]
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "report" / "pareto.png", Path(args.out).with_suffix(".png"))
        Path(args.out).with_suffix(".md").write_text(md)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_result(
        args.out,
        {
            "benchmark": "quickstart",
            "recipe": args.recipe,
            "wall_s": round(wall, 1),
            "step_wall_s": steps,
            "variants": [
                {k: v[k] for k in ("name", "value", "speedup", "size_bytes", "params", "macs")}
                | {"p50_ms": (v["latency"] or {}).get("p50_ms")}
                for v in report["variants"]
            ],
        },
    )


if __name__ == "__main__":
    main()
