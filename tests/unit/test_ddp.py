"""Two processes on CPU (``torchrun``, gloo; accelerate's Accelerator picks the distributed setup up from the
environment) train the same adapter as one process with the same global batch: the keyed sample order
(data.KeyedSampler) and per-sample seeds make both runs see the same samples, and DDP's gradient average equals the
one-process batch mean. (``accelerate launch --cpu`` starts a single process unless MPI is installed, hence torchrun;
on GPUs ``accelerate launch --num_processes N`` is the way.)

Float tolerance: the losses agree to ~1e-6; the weights agree to ~1e-3 of the update's norm, because AdamW divides
each gradient by its own RMS, which turns float-level differences of near-zero gradients into visible ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bolid_lib.method.adapter import load_adapter
from bolid_lib.training.adapter import AdapterTrainConfig, build_adapter
from bolid_lib.training.dataset import write_synthetic_dataset
from bolid_lib.training.models import tiny_models

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(cmd: list[str], tmp: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="", ACCELERATE_USE_CPU="1")
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}")


def test_two_processes_equal_one(tmp_path):
    data = write_synthetic_dataset(tmp_path / "data", people=2, views=2, size=64, seed=0)
    cfg = {"data_dir": str(data), "tiny": True, "resolution": 64, "max_steps": 2, "pose_imgsz": 64, "pose_conf": 1e-6,
           "visibility": 0.0, "preview_timesteps": [0, 999], "lr": 1e-3, "alpha_id": 1e-3, "beta_clip": 0.5,
           "dropout_text": 0.3, "dropout_ref": 0.3, "dropout_body": 0.3, "save_every": 0, "log_every": 1,
           "tensorboard": False}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    # the one-process run goes first: it computes the Body-IDs and caches them in the data folder for the two
    _run([sys.executable, "-m", "bolid_lib.training", "adapter", "--config", str(tmp_path / "cfg.json"),
          "--batch-size", "2", "--output-dir", str(tmp_path / "one")], tmp_path)
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(29400 + os.getpid() % 500),
          "-m", "bolid_lib.training", "adapter", "--config", str(tmp_path / "cfg.json"),
          "--batch-size", "1", "--output-dir", str(tmp_path / "two")], tmp_path)
    one = load_adapter(tmp_path / "one" / "bolid_adapter.safetensors").state_dict()
    two = load_adapter(tmp_path / "two" / "bolid_adapter.safetensors").state_dict()
    assert set(one) == set(two)
    torch.set_num_threads(1)
    start, _ = build_adapter(AdapterTrainConfig(**cfg), tiny_models(AdapterTrainConfig(**cfg)), 16)   # the seeded init
    start = start.state_dict()
    d_one = torch.cat([(one[k] - start[k]).flatten() for k in one])
    d_two = torch.cat([(two[k] - start[k]).flatten() for k in one])
    assert float(d_one.norm()) > 1.0                                           # it trained
    assert float((d_one - d_two).norm()) < 5e-3 * float(d_one.norm())
    assert float(((d_one - d_two).abs() > 1e-5).float().mean()) < 5e-3
    log_one = (tmp_path / "one" / "log.csv").read_text().splitlines()
    log_two = (tmp_path / "two" / "log.csv").read_text().splitlines()
    assert len(log_one) == len(log_two) == 3
    for a, b in zip(log_one[1:], log_two[1:]):
        la, lb = [float(x) for x in a.split(",")[1:5]], [float(x) for x in b.split(",")[1:5]]
        assert la == pytest.approx(lb, rel=1e-4), (a, b)
