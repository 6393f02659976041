"""``python -m bolid_lib.evaluation`` on tiny folders.

FID and IS: the numbers in the report are checked against the direct implementations applied to the same
features, computed here with the same small feature network (a real Inception needs weights we do not
have; a random one of the real architecture runs once below, through --inception, to show that path).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bolid_lib.evaluation import evaluate as E
from bolid_lib.evaluation import metrics as M
from bolid_lib.errors import BoLIDError
from bolid_lib.method.keypoints import PoseBatch

from test_metrics import make_tiny_clip


class TinyFeatures(torch.nn.Module):
    """Inception stand-in: images (B, 3, H, W) [0, 1] -> (pool (B, 12), logits (B, 7)), random but fixed."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 12, 5, stride=2)
        self.fc = torch.nn.Linear(12, 7)

    @torch.no_grad()
    def forward(self, images):
        x = torch.nn.functional.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)
        pool = torch.relu(self.conv(x)).mean((2, 3)) * 10
        return pool, self.fc(pool) * 3


def _save(path: Path, seed: int, size=(48, 40), bar_x: int | None = None):
    rng = np.random.default_rng(seed)
    a = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    if bar_x is not None:
        a[:] = 30
        a[5:-5, bar_x:bar_x + 6] = 250
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


def bar_pose(image: torch.Tensor) -> PoseBatch:
    """A stand-in pose model: 17 keypoints spread along the bright bar of the picture (x = its column)."""
    bright = image[0].min(0).values > 0.9                       # (H, W)
    cols = bright.any(0).nonzero()
    h, w = bright.shape
    kp = torch.zeros(1, 17, 3)
    if len(cols):
        kp[0, :, 0] = cols.float().mean()
        kp[0, :, 1] = torch.linspace(5, h - 5, 17)
        kp[0, :, 2] = 1.0
    return PoseBatch(kp, torch.zeros(1, 4), torch.tensor([len(cols) > 0]), (h, w))


@pytest.fixture
def tree(tmp_path):
    for i in range(6):
        _save(tmp_path / "real" / f"r{i}.png", 100 + i)
    for i in range(5):
        _save(tmp_path / "lb0.5" / f"alice_{i}.png", 200 + i, bar_x=10)          # same as the reference
        _save(tmp_path / "lambda_b=1.0" / f"alice_{i}.png", 300 + i, bar_x=10 + 3 * i)  # drifting bodies
    _save(tmp_path / "refs" / "alice.png", 1, bar_x=10)
    (tmp_path / "prompts.json").write_text(json.dumps({"*": "a person standing", "alice_0.png": "a woman"}))
    return tmp_path


def test_report_matches_direct_fid_and_is(tree):
    feats = TinyFeatures()
    runs = [E.make_run(tree / "lb0.5"), E.make_run(tree / "lambda_b=1.0")]
    report = E.evaluate(tree / "real", runs, features=feats, is_splits=2)

    def stack(folder):
        return torch.stack([E.read_image(p) for p in E.list_images(folder, "x")])

    real_pool, _ = feats(stack(tree / "real"))
    for run, entry in zip(runs, report["runs"]):
        pool, logits = feats(stack(run.folder))
        assert entry["fid"] == pytest.approx(M.fid_from_features(real_pool, pool), rel=1e-4)
        torch.manual_seed(0)
        order = torch.randperm(len(logits)).numpy()
        mean, std = M.inception_score_from_logits(logits, splits=2, order=order)
        assert entry["is_mean"] == pytest.approx(mean, rel=1e-4) and entry["is_std"] == pytest.approx(std, rel=1e-4)
    assert [r["lambda_body"] for r in report["runs"]] == [0.5, 1.0]
    assert set(report["skipped"]) == {"body_fidelity", "clip_t", "clip_i"}


def test_real_set_against_itself_gives_zero_fid(tree):
    report = E.evaluate(tree / "real", [E.make_run(tree / "real")], features=TinyFeatures())
    assert abs(report["runs"][0]["fid"]) < 1e-6


def test_body_fidelity_and_clip_in_the_report(tree, tmp_path):
    clip = M.ClipScorer.load(make_tiny_clip(tmp_path / "clip"))
    runs = [E.make_run(tree / "lb0.5"), E.make_run(tree / "lambda_b=1.0")]
    report = E.evaluate(tree / "real", runs, references=tree / "refs", prompts=tree / "prompts.json",
                        features=None, pose=bar_pose, clip=clip)
    same, drift = report["runs"]
    assert same["body_distance"] == pytest.approx(0.0, abs=1e-6)
    d = [r["body_distance"] for r in drift["per_image"]]
    assert d[0] == pytest.approx(0.0, abs=1e-6) and all(a < b for a, b in zip(d, d[1:]))
    assert all(r["reference"] == "alice.png" for r in same["per_image"])
    assert -1 <= same["clip_t"] <= 1 and -1 <= same["clip_i"] <= 1
    assert report["skipped"] == {"fid": "no Inception network (--inception) given", "is": "no Inception network (--inception) given"}


def test_cli_writes_json_markdown_and_plot(tree, tmp_path):
    (tree / "lb0.5" / E.RUN_FILE).write_text(json.dumps({"lambda_b": 0.25, "name": "quarter"}))    # the older key
    out = tmp_path / "report"
    rc = E.main(["--real", str(tree / "real"), "--generated", str(tree / "lb0.5"), "--runs", str(tree / "lambda_b=1.0"),
                 "--references", str(tree / "refs"), "--out", str(out), "--is-splits", "2"], features=TinyFeatures())
    assert rc == 0
    report = json.loads((out / E.REPORT_JSON).read_text())
    assert [(r["name"], r["lambda_body"]) for r in report["runs"]] == [("quarter", 0.25), ("lambda_b=1.0", 1.0)]
    md = (out / E.REPORT_MD).read_text()
    assert "| quarter | 0.25 | 5 |" in md and "FID" in md and "IS" in md
    png = (out / E.REPORT_PNG).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    im = Image.open(out / E.REPORT_PNG)
    assert im.size[0] > 3 * 300  # FID and IS bars, and the λ_body panel


def test_cli_with_a_real_architecture_inception(tmp_path):
    """The --inception path end to end, with the real architecture at random weights (numbers meaningless)."""
    for i in range(2):
        _save(tmp_path / "real" / f"r{i}.png", i, size=(32, 32))
        _save(tmp_path / "gen" / f"g{i}.png", 10 + i, size=(32, 32))
    torch.manual_seed(0)
    st = tmp_path / M.INCEPTION_SAFETENSORS_NAME
    from bolid_lib.files import save_safetensors_atomic

    save_safetensors_atomic(M.random_inception().network.state_dict(), st, fmt=M.INCEPTION_FORMAT, version=1)
    # --fid-features 64: the same code path as 2048, without torchmetrics' 2048 x 2048 general
    # eigen-decomposition (minutes on a loaded 2-core machine)
    rc = E.main(["--real", str(tmp_path / "real"), "--generated", str(tmp_path / "gen"), "--inception", str(st),
                 "--fid-features", "64", "--out", str(tmp_path / "out")])
    assert rc == 0
    report = json.loads((tmp_path / "out" / E.REPORT_JSON).read_text())
    assert report["inception"] == {"weights": str(st), "fid_features": 64}
    run = report["runs"][0]
    assert np.isfinite(run["fid"]) and run["is_mean"] >= 1.0 - 1e-6 and run["is_splits"] == 2


def test_cli_errors_are_clear(tree, tmp_path, caplog):
    base = ["--real", str(tree / "real"), "--generated", str(tree / "lb0.5"), "--out", str(tmp_path / "o")]
    assert E.main(base) == 2
    assert M.INCEPTION_PTH_NAME in caplog.text and "--no-fid" in caplog.text
    caplog.clear()
    assert E.main(base + ["--inception", str(tmp_path / "missing.safetensors")]) == 2
    assert "Inception weights not found" in caplog.text
    caplog.clear()
    assert E.main(["--real", str(tmp_path / "nope"), "--generated", str(tree / "lb0.5"), "--out", str(tmp_path / "o"),
                   "--no-fid", "--pose", "x.pt", "--references", str(tree / "refs")]) == 2
    assert "pose model file not found" in caplog.text
    caplog.clear()
    assert E.main(base + ["--no-fid", "--clip", str(tmp_path / "clip")]) == 2
    assert "neither --prompts" in caplog.text
    caplog.clear()
    assert E.main(["--real", str(tree / "real"), "--generated", str(tmp_path / "absent"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in caplog.text


def test_pairing_and_prompts_rules(tmp_path):
    gen = [Path(n) for n in ("alice_1.png", "alice-bob_2.png", "bob.png")]
    refs = [Path(n) for n in ("alice.jpg", "alice-bob.jpg", "bob.png")]
    assert [r.name for r in E.pair_references(gen, refs)] == ["alice.jpg", "alice-bob.jpg", "bob.png"]
    assert E.pair_references(gen, refs[:1]) == [refs[0]] * 3
    with pytest.raises(BoLIDError, match="no reference"):
        E.pair_references([Path("carol_1.png")], refs)
    txt = tmp_path / "p.txt"
    txt.write_text("one\ntwo\n")
    with pytest.raises(BoLIDError, match="2 prompt lines for 3"):
        E.read_prompts(txt, gen)
    txt.write_text("everyone\n")
    assert E.read_prompts(txt, gen) == ["everyone"] * 3
    js = tmp_path / "p.json"
    js.write_text(json.dumps({"bob": "a man"}))
    with pytest.raises(BoLIDError, match="no prompt for alice_1.png"):
        E.read_prompts(js, gen)


@pytest.mark.parametrize("name,value", [("lb0.5", 0.5), ("sdxl_lb_0.8_seed1", 0.8), ("lambda_b=1.25", 1.25), ("lambda_body=0.75", 0.75),
                                        ("LAMBDA-B-2", 2.0), ("run_bulb3", None), ("baseline", None)])
def test_lambda_b_from_folder_name(name, value):
    assert E.lambda_body_from_name(name) == value


def test_cli_body_fidelity_with_a_random_yolo(tmp_path, yolo_pose_pt):
    """--pose through bolid_lib.method.pose with a random-init model: the same picture as generated image and
    reference measures ~0 (conf 0 so the random model reports someone; its keypoints mean nothing)."""
    _save(tmp_path / "refs" / "bob.png", 5, size=(64, 96), bar_x=20)
    _save(tmp_path / "gen" / "bob_1.png", 5, size=(64, 96), bar_x=20)
    _save(tmp_path / "gen" / "bob_2.png", 5, size=(64, 96), bar_x=20)
    rc = E.main(["--real", str(tmp_path / "refs"), "--generated", str(tmp_path / "gen"), "--references",
                 str(tmp_path / "refs"), "--pose", str(yolo_pose_pt), "--pose-conf", "0", "--visibility", "0",
                 "--no-fid", "--out", str(tmp_path / "out")])
    assert rc == 0
    run = json.loads((tmp_path / "out" / E.REPORT_JSON).read_text())["runs"][0]
    assert run["body_missing"] == 0 and run["body_distance"] == pytest.approx(0.0, abs=1e-4)
