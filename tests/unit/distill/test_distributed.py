import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


@pytest.mark.distributed
def test_two_gloo_processes_finish_with_identical_weights(tmp_path):
    script = Path(__file__).with_name("ddp_script.py")
    env = {**os.environ, "COMPRESS_PROGRESS": "0", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(script),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert w0.keys() == w1.keys() and len(w0) > 0
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    q0 = torch.load(tmp_path / "queue0.pt", weights_only=True)
    q1 = torch.load(tmp_path / "queue1.pt", weights_only=True)
    # 64 training images -> 32 per rank -> 4 steps of 8: every step enqueues both ranks' keys (16)
    assert q0["filled"] == q1["filled"] == 64
    assert torch.equal(q0["queue"], q1["queue"])
