"""The same command under torchrun: two gloo processes, one run directory written by rank 0."""

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.distributed
def test_torchrun_train_writes_one_complete_run(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "COMPRESS_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29517",
        "-m",
        "compress",
        "train",
        "--model",
        "builtin:simple_cnn",
        "--width",
        "0.25",
        "--data",
        "digits",
        "--image-size",
        "8",
        "--limit",
        "64",
        "--epochs",
        "1",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["steps"][0]["technique"] == "train"
    assert not (tmp_path / "ddp.partial").exists()
    assert proc.stdout.count("done ") == 1  # only rank 0 reports
