"""The trainers' shared tools (bolid_lib.training.loop): learning-rate schedules, optimizer state round trip and
its version 1 keys, checkpoint layout and resume, weight key checks, settings."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from bolid_lib import files
from bolid_lib.errors import BoLIDError
from bolid_lib.method.body_vae import BodyVAEConfig
from bolid_lib.training import loop
from bolid_lib.training.adapter import AdapterTrainConfig
from bolid_lib.training.body_vae import LEGACY_CHECKPOINT_FORMAT, TrainConfig, synthetic_viewset, train_body_vae

TINY = BodyVAEConfig(input_size=32, latent_dim=16, widths=(8, 16), feature_dim=32, pool_size=2, groups=4)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_adapter_schedule_warms_up_then_stays():
    s = AdapterTrainConfig(lr=1e-3, warmup_steps=4).lr_schedule
    assert [s(i) for i in (0, 1, 2, 3, 4, 1000)] == [0.25e-3, 0.5e-3, 0.75e-3, 1e-3, 1e-3, 1e-3]
    assert AdapterTrainConfig(lr=2e-4).lr_schedule(0) == 2e-4                     # no warm-up


def test_adapter_cosine_decay_ends_at_five_percent():
    s = AdapterTrainConfig(lr=1e-3, warmup_steps=10, max_steps=110, lr_decay="cosine").lr_schedule
    assert s(0) == pytest.approx(1e-4, rel=1e-12) and s(10) == pytest.approx(1e-3, rel=1e-12)
    assert s(60) == pytest.approx(0.525e-3, rel=1e-12)                            # half way: (0.05 + 1) / 2
    assert s(110) == pytest.approx(0.05e-3, rel=1e-12) and s(85) < s(60) < s(35)
    with pytest.raises(BoLIDError, match="lr_decay"):
        AdapterTrainConfig(lr_decay="linear")


def test_body_vae_schedule_warms_up_then_cosine_decays():
    s = TrainConfig(lr=1e-3, warmup=10, steps=110, min_lr_ratio=0.1).lr_schedule
    assert s(0) == pytest.approx(1e-4, rel=1e-12) and s(9) == pytest.approx(1e-3, rel=1e-12)
    assert s(10) == pytest.approx(1e-3, rel=1e-12)                                # cosine starts at lr
    assert s(60) == pytest.approx(0.55e-3, rel=1e-12)                             # half way: (0.1 + 1) / 2
    assert s(110) == pytest.approx(1e-4, rel=1e-12) and s(500) == pytest.approx(1e-4, rel=1e-12)
    assert s(35) > s(60) > s(85)
    with pytest.raises(BoLIDError, match="decay"):
        loop.Schedule(1e-3, decay="linear")


def _stepped_adamw(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    for _ in range(3):
        model(torch.randn(4, 5)).square().mean().backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def test_adamw_is_fused_where_torch_has_it_and_its_state_resumes_either_way():
    torch.manual_seed(0)
    w0 = torch.randn(64, 32)

    def run(opt_of, state=None, steps=3):
        w = torch.nn.Parameter(w0.clone())
        opt = opt_of([w])
        if state is not None:
            opt.load_state_dict(state)
        for i in range(steps):
            opt.zero_grad()
            (w * torch.linspace(-1, 1, 32) * (i + 1)).pow(2).sum().backward()
            opt.step()
        return w.detach(), opt

    fused = lambda p: loop.adamw(p, lr=1e-2, weight_decay=0.01)
    plain = lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.01, foreach=False)
    assert fused([torch.nn.Parameter(w0)]).defaults["fused"] is True   # torch >= 2.4 has a CPU kernel
    a, opt_a = run(fused)
    b, opt_b = run(plain)
    assert torch.allclose(a, b, atol=1e-6) and not torch.equal(a, w0)
    # a fused optimizer's saved state resumes an unfused one and back
    c, _ = run(plain, opt_a.state_dict(), steps=1)
    d, _ = run(fused, opt_b.state_dict(), steps=1)
    assert torch.allclose(c, d, atol=1e-6)


def test_optimizer_state_round_trip_is_bit_exact(tmp_path):
    model, opt = _stepped_adamw()
    tensors, info = loop.flatten_optimizer(opt)
    assert tensors and all(k.startswith("optim.") for k in tensors)
    path = files.save_safetensors_atomic(tensors, tmp_path / "o.safetensors", fmt="bolid.test", version=1, config=info)
    read, meta = files.read_safetensors(path)
    _, info_back = files.read_format(meta, path, fmt="bolid.test", max_version=1)
    twin = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
    twin.load_state_dict(model.state_dict())
    opt2 = torch.optim.AdamW(twin.parameters(), lr=0.5)
    loop.restore_optimizer(opt2, loop.unflatten_optimizer(read, info_back))
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]                               # lr, betas (a tuple again), ...
    assert a["state"].keys() == b["state"].keys()
    for i in a["state"]:
        assert a["state"][i].keys() == b["state"][i].keys()
        for k, v in a["state"][i].items():
            assert v.dtype == b["state"][i][k].dtype and torch.equal(v, b["state"][i][k]), (i, k)
    # and the restored optimizer keeps stepping exactly as the live one
    x = torch.randn(4, 5)
    for m, o in ((model, opt), (twin, opt2)):
        m(x).square().mean().backward()
        o.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), twin.parameters()))


def test_version_1_optimizer_keys_still_read():
    _, opt = _stepped_adamw()
    tensors, info = loop.flatten_optimizer(opt)
    info = {**info, "scalars": {"optim.0.extra": 3}}
    want = loop.unflatten_optimizer(tensors, info)
    # adapter v1: state.<id>.<name> for tensors and scalars
    v1_adapter = {"state." + k[len("optim."):]: v for k, v in tensors.items()}
    got = loop.unflatten_optimizer(v1_adapter, {**info, "scalars": {"state.0.extra": 3}})
    # Body-ID VAE v1: optim.<id>.<name> tensors beside model.* weights, bare <id>.<name> scalars
    got_body = loop.unflatten_optimizer({**tensors, "model.w": torch.zeros(1)}, {**info, "scalars": {"0.extra": 3}})
    for g in (got, got_body):
        assert g["state"].keys() == want["state"].keys() and g["state"][0]["extra"] == 3
        assert all(torch.equal(g["state"][i][k], v) for i in want["state"] for k, v in want["state"][i].items()
                   if isinstance(v, torch.Tensor))
    with pytest.raises(BoLIDError, match="damaged"):
        loop.unflatten_optimizer(tensors, {**info, "scalars": {"optim.x.step": 1}})


def test_body_vae_resume_from_an_old_single_file_checkpoint_equals_an_uninterrupted_run(tmp_path):
    """A checkpoint of the VAE trainer's old layout (one file step_NNNNNNNN.safetensors, before issue 27), of
    version 1 (before the shared key scheme: bare scalar keys), resumes, and the resumed run ends on the
    uninterrupted run's weights bit for bit."""
    data = synthetic_viewset(3, 4, TINY, seed=0, render_size=48)
    cfg = TrainConfig(steps=4, batch_persons=2, warmup=1, checkpoint_every=2, log_every=100)
    straight, _ = train_body_vae(TINY, cfg, data, checkpoint_dir=tmp_path / "a")
    # Write step 2 as the old trainer did: model.<key> weights and the optimizer's tensors in one file, the step,
    # settings and optimizer scalars in its metadata.
    folder = tmp_path / "a" / "step_0000002"
    weights, _ = files.read_safetensors(folder / "body_vae.safetensors")
    opt_tensors, opt_meta = files.read_safetensors(folder / "optimizer.safetensors")
    opt_info = json.loads(opt_meta[files.CONFIG_KEY])
    opt_info["scalars"] = {k[len("optim."):]: v for k, v in opt_info["scalars"].items()}
    state = json.loads((folder / "state.json").read_text())
    old = files.save_safetensors_atomic(
        {**{f"model.{k}": v for k, v in weights.items()}, **opt_tensors}, tmp_path / "old" / "step_00000002.safetensors",
        fmt=LEGACY_CHECKPOINT_FORMAT, version=1, config=TINY.to_dict(),
        metadata={"bolid.train_state": json.dumps({"step": 2, "train": state["train"], "optimizer": opt_info})})
    resumed, hist = train_body_vae(TINY, cfg, data, resume=old)
    assert [h["step"] for h in hist] == [2, 3]
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # A folder still holding the old layout's files is another run: a fresh run there is refused.
    with pytest.raises(BoLIDError, match="holds another training run"):
        train_body_vae(TINY, cfg, data, checkpoint_dir=tmp_path / "old")


def test_both_trainers_write_one_checkpoint_layout(tmp_path):
    """The adapter and the Body-ID VAE trainers share loop.CHECKPOINTS and loop.save_checkpoint: the same step_N
    folder, the same optimizer file and state.json; only the weights file differs (each the file ComfyUI loads)."""
    from bolid_lib.training import adapter as A, body_vae as V

    assert A.CHECKPOINTS is V.CHECKPOINTS is loop.CHECKPOINTS
    data = synthetic_viewset(3, 4, TINY, seed=0, render_size=48)
    train_body_vae(TINY, TrainConfig(steps=2, batch_persons=2, warmup=1, checkpoint_every=2, log_every=100), data,
                   checkpoint_dir=tmp_path / "vae")
    vae_ckpt = loop.CHECKPOINTS.latest(tmp_path / "vae")
    model = torch.nn.Linear(2, 2)
    opt = loop.adamw(model.parameters(), lr=1e-3)
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    other = loop.save_checkpoint(loop.CHECKPOINTS.path(tmp_path / "other", 2), 2,
                                 lambda tmp: (tmp / "weights.safetensors").write_bytes(b"w"), opt, {"train": {}})
    assert vae_ckpt.name == other.name == "step_0000002"
    names = lambda p: sorted(q.name for q in p.iterdir() if q.name != V.WEIGHTS_FILE and q.name != "weights.safetensors")
    assert names(vae_ckpt) == names(other) == ["optimizer.safetensors", "state.json"]
    assert json.loads((vae_ckpt / "state.json").read_text())["step"] == 2
    restored = loop.adamw(model.parameters(), lr=1e-3)
    opt_state, state = loop.read_checkpoint_state(other)
    loop.restore_optimizer(restored, opt_state)
    assert state == {"step": 2, "train": {}}
    assert torch.equal(restored.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_checkpoint_layout_finds_the_newest_complete_one(tmp_path):
    folders = loop.CHECKPOINTS
    for step in (9, 10, 30):
        folders.path(tmp_path, step).mkdir()
        if step != 30:                                                          # 30: interrupted before state.json
            (folders.path(tmp_path, step) / "state.json").write_text("{}")
    (tmp_path / "step_00000011").mkdir()                                        # another padding: still step 11
    (tmp_path / "step_00000011" / "state.json").write_text("{}")
    assert folders.path(tmp_path, 10).name == "step_0000010"
    assert [p.name for p in folders.all(tmp_path)] == ["step_0000009", "step_0000010", "step_00000011"]
    assert folders.resolve("latest", tmp_path).name == "step_00000011"
    assert folders.resolve(tmp_path, None).name == "step_00000011"             # a folder of checkpoints: its newest
    assert folders.resolve(tmp_path / "step_0000009", None).name == "step_0000009"
    assert folders.resolve(None, tmp_path) is None
    assert folders.resolve("latest", tmp_path / "nothing_yet") is None         # a fresh run
    with pytest.raises(BoLIDError, match="no checkpoint"):
        folders.resolve(tmp_path / "step_0000030", None)


def test_prune_keeps_the_newest_complete_checkpoints(tmp_path):
    folders = loop.CHECKPOINTS
    for step in (1, 2, 3, 4):
        folders.path(tmp_path / "f", step).mkdir(parents=True)
        (folders.path(tmp_path / "f", step) / "state.json").write_text("{}")
        (folders.path(tmp_path / "f", step) / "adapter.safetensors").write_bytes(b"x")
    folders.path(tmp_path / "f", 5).mkdir()                                     # incomplete: not counted, not touched
    gone = folders.prune(tmp_path / "f", 2)
    assert [p.name for p in gone] == ["step_0000001", "step_0000002"]
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["step_0000003", "step_0000004", "step_0000005"]
    assert folders.prune(tmp_path / "f", 0) == [] and len(folders.all(tmp_path / "f")) == 2   # 0: keep all


def test_load_weights_names_what_does_not_fit():
    net = torch.nn.Linear(3, 2)
    good = {k: torch.ones_like(v) for k, v in net.state_dict().items()}
    loop.load_weights(net, good, "x.safetensors")
    assert torch.equal(net.weight, torch.ones(2, 3))
    with pytest.raises(BoLIDError, match=r"1 missing \(bias\)"):
        loop.load_weights(net, {"weight": good["weight"]}, "x.safetensors")
    loop.load_weights(net, {"weight": good["weight"] * 2}, "x.safetensors", partial=True)   # bias kept
    assert torch.equal(net.weight, torch.full((2, 3), 2.0)) and torch.equal(net.bias, torch.ones(2))
    with pytest.raises(BoLIDError, match=r"1 unexpected \(extra\)"):
        loop.load_weights(net, {**good, "extra": torch.zeros(1)}, "x.safetensors", partial=True)
    with pytest.raises(BoLIDError, match=r"weight \(3, 3\) != \(2, 3\)"):
        loop.load_weights(net, {**good, "weight": torch.zeros(3, 3)}, "x.safetensors")


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".toml"])
def test_settings_round_trip_through_a_file(tmp_path, suffix):
    import argparse

    cfg = TrainConfig(steps=7, context_views=(2, 3), lr=5e-4)
    d = loop.config_to_dict(cfg)
    path = tmp_path / f"c{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(d))
    elif suffix == ".yaml":
        import yaml
        path.write_text(yaml.safe_dump(d))
    else:
        path.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in d.items()))
    back = loop.config_from_dict(TrainConfig, loop.read_config_file(path, TrainConfig))
    assert back == cfg and back.context_views == (2, 3)
    p = argparse.ArgumentParser()
    loop.add_config_flags(p, TrainConfig)
    args = p.parse_args(["--steps", "9", "--context-views", "1", "2"])
    assert loop.config_from_dict(TrainConfig, loop.flag_values(args, TrainConfig, d)) == TrainConfig(
        steps=9, context_views=(1, 2), lr=5e-4)
    with pytest.raises(BoLIDError, match="unknown settings"):
        loop.config_from_dict(TrainConfig, {"stepz": 1})


def test_one_settings_helper_serves_the_method_and_the_trainers():
    """settings.from_dict turns JSON lists back into tuples only where a field is a tuple, and refuses unknown keys
    with the caller's message: the method's configs (from file metadata) and the trainers' (from files) use it."""
    from bolid_lib import settings
    from bolid_lib.method.adapter import AdapterConfig
    from bolid_lib.method.body_vae import BodyVAEConfig

    cfg = BodyVAEConfig()
    back = BodyVAEConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    a = AdapterConfig(body_dim=64)
    assert AdapterConfig.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    with pytest.raises(BoLIDError, match=r"adapter config has fields this ComfyUI-BoLID does not know \(zzz\): update"):
        AdapterConfig.from_dict({**a.to_dict(), "zzz": 1})
    with pytest.raises(BoLIDError, match=r"Body-ID VAE config has fields this pack does not know \(zzz\)"):
        BodyVAEConfig.from_dict({**cfg.to_dict(), "zzz": 1})

    @dataclasses.dataclass(frozen=True)
    class C:
        pair: tuple[int, int] = (1, 2)
        maybe: tuple[float, ...] | None = None
        names: list = dataclasses.field(default_factory=list)

    c = settings.from_dict(C, {"pair": [3, 4], "maybe": [0.5], "names": ["a"]})
    assert c.pair == (3, 4) and c.maybe == (0.5,) and c.names == ["a"]       # a list field stays a list
