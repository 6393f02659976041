"""Issue 27, fault 3: a trainer refuses a folder holding another run unless it resumes it or is told to overwrite it;
checkpoints are written under a temporary name and renamed, so a crash mid-save never leaves a mixed checkpoint."""

from __future__ import annotations

import csv

import pytest
import torch

from bolid_lib.errors import BoLIDError
from bolid_lib.method.body_vae import BodyVAEConfig
from bolid_lib.training import loop
from bolid_lib.training.body_vae import CHECKPOINTS as VAE_CKPTS, TrainConfig, synthetic_viewset, train_body_vae

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = BodyVAEConfig(input_size=32, latent_dim=8, widths=(8, 16), feature_dim=16)


@pytest.fixture(scope="module")
def views():
    return synthetic_viewset(3, 3, TINY, seed=0)


def vae_cfg(steps: int, seed: int = 0) -> TrainConfig:
    return TrainConfig(steps=steps, batch_persons=2, context_views=(1, 2), target_views=1, warmup=1, seed=seed,
                       checkpoint_every=1, keep_checkpoints=2, log_every=100)


def test_vae_trainer_refuses_another_runs_checkpoints(views, tmp_path):
    ckpts = tmp_path / "checkpoints"
    train_body_vae(TINY, vae_cfg(4, seed=1), views, checkpoint_dir=ckpts)
    before = {str(p.relative_to(ckpts)): p.read_bytes() for p in ckpts.rglob("*") if p.is_file()}
    assert sorted(p.name for p in VAE_CKPTS.all(ckpts)) == ["step_0000003", "step_0000004"]
    # A fresh run of 2 steps would prune step 3 and 4 of the other run: refused, nothing touched.
    with pytest.raises(BoLIDError, match="holds another training run.*resume it.*overwrite"):
        train_body_vae(TINY, vae_cfg(2, seed=2), views, checkpoint_dir=ckpts)
    assert {str(p.relative_to(ckpts)): p.read_bytes() for p in ckpts.rglob("*") if p.is_file()} == before
    # Resuming the same run continues it (a checkpoint of this folder, or "latest").
    _, hist = train_body_vae(TINY, vae_cfg(5, seed=1), views, checkpoint_dir=ckpts, resume="latest")
    assert [h["step"] for h in hist] == [4]
    _, hist = train_body_vae(TINY, vae_cfg(6, seed=1), views, checkpoint_dir=ckpts, resume=VAE_CKPTS.latest(ckpts))
    assert [h["step"] for h in hist] == [5]
    # Told to overwrite: the other run's checkpoints go, the new run's are the only ones.
    train_body_vae(TINY, vae_cfg(2, seed=2), views, checkpoint_dir=ckpts, overwrite=True)
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_0000001", "step_0000002"]


def test_vae_command_line_keeps_the_other_runs_file(tmp_path):
    from bolid_lib.training.cli import main

    args = ["body-vae", "--synthetic", "3", "--views-per-person", "3", "--steps", "1", "--batch-persons", "2",
            "--input-size", "32", "--latent-dim", "8", "--widths", "8,16", "--feature-dim", "16", "--warmup", "1",
            "--device", "cpu", "--out", str(tmp_path)]
    assert main(args) == 0
    first = (tmp_path / "body_vae.safetensors").read_bytes()
    with pytest.raises(BoLIDError, match="holds another run's body_vae.safetensors"):
        main([*args, "--seed", "5"])
    assert (tmp_path / "body_vae.safetensors").read_bytes() == first
    assert main([*args, "--seed", "5", "--overwrite"]) == 0
    assert (tmp_path / "body_vae.safetensors").read_bytes() != first


# --- the adapter trainer -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from bolid_lib.training import dataset as D

    return D.write_synthetic_dataset(tmp_path_factory.mktemp("data"), people=2, views=2, size=64, seed=0)


def adapter_cfg(data_dir, out, **kw):
    from bolid_lib.training.adapter import AdapterTrainConfig

    base = dict(data_dir=str(data_dir), output_dir=str(out), tiny=True, resolution=64, batch_size=2, max_steps=2,
                pose_imgsz=64, pose_conf=1e-6, visibility=0.0, preview_timesteps=(0, 999), lr=1e-3, alpha_id=0.0,
                beta_clip=0.0, branches="ref", save_every=1, keep_checkpoints=2, log_every=1, tensorboard=False, cpu=True)
    base.update(kw)
    return AdapterTrainConfig(**base)


@pytest.fixture(scope="module")
def models(data_dir, tmp_path_factory):
    from bolid_lib.training.models import tiny_models

    return tiny_models(adapter_cfg(data_dir, tmp_path_factory.mktemp("m")))


def _log_steps(out) -> list[int]:
    with open(out / "log.csv", newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def test_adapter_trainer_refuses_another_run_and_resumes_its_own(models, data_dir, tmp_path):
    from bolid_lib.training.adapter import CHECKPOINTS, train

    out = tmp_path / "run"
    train(adapter_cfg(data_dir, out, seed=1), models=models)
    final = (out / "bolid_adapter.safetensors").read_bytes()
    states = {p.name: (p / "state.json").read_text() for p in CHECKPOINTS.all(out / "checkpoints")}
    assert _log_steps(out) == [1, 2]
    with pytest.raises(BoLIDError, match="holds another training run"):
        train(adapter_cfg(data_dir, out, seed=2), models=models)
    assert (out / "bolid_adapter.safetensors").read_bytes() == final
    assert {p.name: (p / "state.json").read_text() for p in CHECKPOINTS.all(out / "checkpoints")} == states
    assert _log_steps(out) == [1, 2]
    # Its own run resumes ("latest"); the log holds each step once.
    result = train(adapter_cfg(data_dir, out, seed=1, max_steps=3, resume="latest"), models=models)
    assert result["step"] == 3 and _log_steps(out) == [1, 2, 3]
    # Resumed from an earlier checkpoint, the log drops the steps after it instead of repeating them.
    train(adapter_cfg(data_dir, out, seed=1, max_steps=3, resume=str(out / "checkpoints" / "step_0000002")), models=models)
    assert _log_steps(out) == [1, 2, 3]
    # Overwrite: a fresh run; the log starts again.
    train(adapter_cfg(data_dir, out, seed=2, max_steps=1, overwrite=True), models=models)
    assert _log_steps(out) == [1]
    assert [p.name for p in CHECKPOINTS.all(out / "checkpoints")] == ["step_0000001"]


def test_a_crash_while_saving_leaves_the_old_checkpoint_whole(models, data_dir, tmp_path, monkeypatch):
    from bolid_lib.training import adapter as A

    out = tmp_path / "run"
    A.train(adapter_cfg(data_dir, out, max_steps=1), models=models)
    step1 = out / "checkpoints" / "step_0000001"
    before = {f.name: f.read_bytes() for f in step1.iterdir()}

    def crash(*a, **k):
        raise OSError("disk full")

    # Saving step 1 again (a resume that re-reaches it) dies after the adapter file is written.
    monkeypatch.setattr(loop, "flatten_optimizer", crash)
    ckpt_adapter = A.load_adapter(step1 / "adapter.safetensors")
    opt = torch.optim.AdamW(ckpt_adapter.parameters())
    with pytest.raises(OSError, match="disk full"):
        A.save_checkpoint(step1, 1, ckpt_adapter, opt, adapter_cfg(data_dir, out))
    assert {f.name: f.read_bytes() for f in step1.iterdir()} == before       # untouched, still complete
    assert A.CHECKPOINTS.all(out / "checkpoints") == [step1]
