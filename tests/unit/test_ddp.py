"""Two processes on CPU through ``accelerate launch`` (gloo) train the same adapter as one process with the same
global batch: the keyed sample order (data.KeyedSampler) and per-sample seeds make the two runs see the same
samples, and DDP's gradient average equals the one-process batch mean."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bolid_lib.adapter import load_adapter
from bolid_lib.training.data import write_synthetic_dataset

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(cmd: list[str], tmp: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}")


def test_two_processes_equal_one(tmp_path):
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("accelerate's launcher is not installed")
    data = write_synthetic_dataset(tmp_path / "data", people=2, views=2, size=64, seed=0)
    cfg = {"data_dir": str(data), "tiny": True, "resolution": 64, "max_steps": 2, "pose_imgsz": 64, "pose_conf": 1e-6,
           "visibility": 0.0, "preview_timesteps": [0, 999], "lr": 1e-3, "alpha_id": 1e-3, "beta_clip": 0.5,
           "dropout_text": 0.3, "dropout_ref": 0.3, "dropout_body": 0.3, "save_every": 0, "log_every": 1,
           "tensorboard": False}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    # the one-process run goes first: it computes the Body-IDs and caches them in the data folder for the two
    _run([sys.executable, "-m", "bolid_lib.train", "adapter", "--config", str(tmp_path / "cfg.json"),
          "--batch-size", "2", "--output-dir", str(tmp_path / "one")], tmp_path)
    _run([accelerate, "launch", "--num_processes", "2", "--cpu", "--num_machines", "1", "--mixed_precision", "no",
          "--dynamo_backend", "no", "-m", "bolid_lib.train", "adapter", "--config", str(tmp_path / "cfg.json"),
          "--batch-size", "1", "--output-dir", str(tmp_path / "two")], tmp_path)
    one = load_adapter(tmp_path / "one" / "bolid_adapter.safetensors").state_dict()
    two = load_adapter(tmp_path / "two" / "bolid_adapter.safetensors").state_dict()
    assert set(one) == set(two)
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-6, msg=lambda m, k=k: f"{k}: {m}")
    log_one = (tmp_path / "one" / "log.csv").read_text().splitlines()
    log_two = (tmp_path / "two" / "log.csv").read_text().splitlines()
    assert len(log_one) == len(log_two) == 3
    for a, b in zip(log_one[1:], log_two[1:]):
        la, lb = [float(x) for x in a.split(",")[1:5]], [float(x) for x in b.split(",")[1:5]]
        assert la == pytest.approx(lb, rel=1e-4), (a, b)
