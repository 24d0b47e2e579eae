"""scripts/gpu_check.sh runs only on a GPU machine: check here that it parses, that every Python entry
it calls exists, and that each takes the flags the script passes (a renamed flag fails on the device)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[3]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_parses_and_its_entries_take_their_flags():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    text = SCRIPT.read_text()
    calls = re.findall(r"python3 (benchmarks/\S+\.py)([^>|\n]*)", text)
    assert {c[0] for c in calls} >= {"benchmarks/gpu_latency.py", "benchmarks/gpu_backends.py"}
    for entry, args in calls:
        assert (ROOT / entry).is_file(), entry
        help_text = subprocess.run(
            [sys.executable, str(ROOT / entry), "--help"], capture_output=True, text=True, check=True, cwd=ROOT
        ).stdout
        for flag in re.findall(r"(--[a-z][a-z-]*)", args):
            assert flag in help_text, f"{entry} has no {flag}"
    assert re.search(r"pytest tests/gpu tests/tensorrt", text)
    # the time limits of its steps add up to less than 8 minutes
    assert sum(int(t) for t in re.findall(r"timeout (\d+)", text)) < 8 * 60
