"""Training: config loading/overrides, dataset determinism, the loop, exact resume, DDP, refine mode.

Everything runs the real trainer on the 6 photos in tests/data at 64x64 with the `tiny` generator
and a narrow discriminator; budget < 3 min on 2 cores.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from training.config import CONFIG_DIR, ConfigError, RunConfig, load_config
from training.data import DataError, InpaintingDataset, StepBatchSampler, find_images, split_holdout
from training.masks import MASK_TYPES, make_policy

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
PHOTOS = ("lomiri-dragonfly.jpg", "mate-aqua.jpg", "mate-garden.jpg", "mate-storm.jpg",
          "plasma-coldripple.jpg", "plasma-colorfulcups.jpg")  # see tests/data/SOURCES.md
HOLDOUT = "mate-storm.jpg"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A folder holding exactly our six test photos (tests/data is shared with other tests)."""
    d = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        (d / name).write_bytes((DATA / name).read_bytes())
    return d


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a busy 2-core machine two threads per process oversubscribe badly."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small_overrides(root: Path, out: Path, steps: int = 3) -> list[str]:
    return [f"data.root={root}", f"data.holdout=[{HOLDOUT}]", "data.crop=64", "data.min_scale=0.3",
            "optim.batch_size=2", "masks.val_size=64", f"train.steps={steps}", f"train.out_dir={out}",
            "train.log_every=1", "train.val_every=0", "train.image_every=2", "train.ckpt_every=0",
            "model.disc_ndf=16", "model.disc_layers=3"]


def small_cfg(root: Path, out: Path, steps: int = 3, extra: list[str] | None = None,
              config: str = "glama-tiny") -> RunConfig:
    return load_config(CONFIG_DIR / f"{config}.yaml", small_overrides(root, out, steps) + (extra or []))


# ------------------------------------------------------------------------------------ config

PAPER_CONFIGS = ("glama-big-lama", "glama-lama-fourier")  # they claim the paper's settings


def test_bundled_configs_load():
    for p in sorted(CONFIG_DIR.glob("*.yaml")):
        cfg = load_config(p, ["perceptual_weights=/x/encoder_epoch_20.pth"] if p.stem in PAPER_CONFIGS else [])
        assert cfg.model.name in ("tiny", "small", "lama-fourier", "big-lama"), p
    big = load_config(CONFIG_DIR / "glama-big-lama.yaml", ["loss.perceptual=recon"])
    assert (big.optim.batch_size, big.data.crop, big.train.amp, big.model.name) == (20, 256, True, "big-lama")
    lama = load_config(CONFIG_DIR / "lama-tiny.yaml")
    assert lama.loss.ffl == 0 and lama.loss.tv == 0 and lama.masks.policy == "lama"
    glama = load_config(CONFIG_DIR / "glama-tiny.yaml")
    assert glama.loss.ffl == 1 and glama.loss.tv == 1 and glama.masks.policy == "general"
    assert len(glama.data.holdout) == 5
    assert load_config(CONFIG_DIR / "refine-tiny.yaml").train.mode == "refine"


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_configs_refuse_to_train_holes_unsupervised(name):
    """Without the HRF weights a paper config names the choices instead of silently dropping the term."""
    with pytest.raises(ConfigError) as e:
        load_config(name)
    msg = str(e.value)
    assert "perceptual_weights" in msg and "loss.perceptual=recon" in msg and "loss.perceptual=off" in msg
    assert load_config(name, ["loss.perceptual=off"]).loss.perceptual == "off"
    sub = load_config(name, ["loss.perceptual=recon"])
    assert sub.loss.perceptual == "recon" and sub.loss.pl == 100  # the paper's HRF weight is kept for hrf



def test_yaml_booleans_for_string_fields(tmp_path):
    """YAML 1.1 reads a bare off as false: in a file that is an error saying to quote it; on the
    command line a string field takes the text as given."""
    p = tmp_path / "c.yaml"
    p.write_text("loss: {perceptual: off}\n")
    with pytest.raises(ConfigError, match='loss.perceptual: YAML read this as false .*quote it, e.g. "off"'):
        load_config(p)
    p.write_text('loss: {perceptual: "off"}\n')
    assert load_config(p).loss.perceptual == "off"
    assert load_config(None, ["loss.perceptual=off"]).loss.perceptual == "off"
    assert load_config(None, ["loss.perceptual='recon'"]).loss.perceptual == "recon"


def test_unset_data_root_is_an_error(tmp_path, monkeypatch):
    """An unset data.root used to train on everything below the current folder (Path('') is '.')."""
    (tmp_path / "icon.png").write_bytes((DATA / PHOTOS[0]).read_bytes())
    monkeypatch.chdir(tmp_path)
    for root in ("", [], ["", str(tmp_path)]):
        with pytest.raises(DataError, match="data.root is not set"):
            find_images(root)
    from training.train import main

    assert main(["--set", "loss.perceptual=off", "--set", f"train.out_dir={tmp_path / 'run'}", "-q"]) == 2
    assert not (tmp_path / "run").exists()


def test_several_roots_and_excluded_test_photos(photos, tmp_path):
    other = tmp_path / "more"
    other.mkdir()
    (other / "extra.jpg").write_bytes((DATA / PHOTOS[1]).read_bytes())
    paths = find_images([photos, other])
    assert len(paths) == len(PHOTOS) + 1 and len(set(paths)) == len(paths)
    assert find_images([photos, photos]) == find_images(photos)  # a folder named twice counts once
    train, val = split_holdout(paths, [photos, other], ["extra.jpg", HOLDOUT])
    assert {p.name for p in val} == {"extra.jpg", HOLDOUT} and len(train) == len(PHOTOS) - 1


def test_overrides_are_typed():
    cfg = load_config("glama-tiny", ["loss.ffl=2", "optim.batch_size=8", "train.amp=true", "optim.lr_g=5e-4",
                                     "data.holdout=[a.jpg, b.png]", "masks.policy={thin: 1, thick: 3}",
                                     "perceptual_weights=/x/encoder_epoch_20.pth"])
    assert cfg.loss.ffl == 2.0 and isinstance(cfg.loss.ffl, float)
    assert cfg.optim.batch_size == 8 and isinstance(cfg.optim.batch_size, int)
    assert cfg.train.amp is True and cfg.optim.lr_g == 5e-4
    assert cfg.data.holdout == ["a.jpg", "b.png"]
    assert cfg.masks.policy == {"thin": 1.0, "thick": 3.0}
    assert cfg.perceptual_weights == "/x/encoder_epoch_20.pth"


@pytest.mark.parametrize("override, message", [
    ("loss.fll=2", "unknown key 'loss.fll'"),
    ("nosuch.x=1", "unknown key 'nosuch'"),
    ("optim.batch_size=2.5", "optim.batch_size: expected an integer"),
    ("train.amp=maybe", "train.amp: expected true/false"),
    ("loss.ffl=-1", "loss.ffl must be a number >= 0"),
    ("masks.policy=blobs", "unknown mask type 'blobs'"),
    ("train.mode=paint", "train.mode must be one of"),
    ("loss.ffl", "expected key=value"),
])
def test_bad_overrides_are_clear_errors(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_config("glama-tiny", [override])


def test_bad_yaml_key_names_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model: {name: tiny}\noptim: {batchsize: 4}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(p) in str(e.value) and "batchsize" in str(e.value) and "batch_size" in str(e.value)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


# ----------------------------------------------------------------------------------- dataset

def test_dataset_shapes_and_determinism(photos):
    paths = find_images(photos)
    assert len(paths) == 6
    train, val = split_holdout(paths, photos, [HOLDOUT])
    assert [p.name for p in val] == [HOLDOUT] and len(train) == 5
    ds = InpaintingDataset(train, crop=64, policy=make_policy("general"), seed=3, min_scale=0.3)
    a, b, c = ds[(0, 7)], ds[(0, 7)], ds[(1, 7)]
    assert a["image"].shape == (3, 64, 64) and a["mask"].shape == (1, 64, 64)
    assert a["image"].dtype == torch.float32 and 0 <= a["image"].min() and a["image"].max() <= 1
    assert set(np.unique(a["mask"].numpy())) <= {0.0, 1.0} and a["type"] in MASK_TYPES
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert not (torch.equal(a["image"], c["image"]) and torch.equal(a["mask"], c["mask"]))
    # a crop larger than the images (short side 160) upsamples instead of failing
    big = InpaintingDataset(train, crop=192, policy=make_policy("thin"), seed=0)
    assert big[(0, 1)]["image"].shape == (3, 192, 192)


def test_batches_depend_only_on_seed_and_step():
    full = StepBatchSampler(5, 2, seed=1, start_step=0, total_steps=9)
    later = StepBatchSampler(5, 2, seed=1, start_step=4, total_steps=9)
    assert list(full)[4:] == list(later)
    # two ranks split an epoch into disjoint shares; 5 images < world*batch*... are virtually repeated
    r0 = StepBatchSampler(5, 2, seed=1, start_step=0, total_steps=1, rank=0, world_size=2)
    r1 = StepBatchSampler(5, 2, seed=1, start_step=0, total_steps=1, rank=1, world_size=2)
    k0 = {i for _, i in r0.batch(0)}
    k1 = {i for _, i in r1.batch(0)}
    assert len(k0) == len(k1) == 2 and not (k0 & k1)
    tiny = StepBatchSampler(1, 4, seed=0, start_step=0, total_steps=2, rank=0, world_size=2)
    assert all(len(b) == 4 for b in tiny)


@pytest.mark.parametrize("cache", [True, False])
def test_truncated_and_broken_files_are_skipped_by_name(tmp_path, caplog, cache):
    """A truncated JPEG decodes as a grey-filled picture with only libjpeg's anonymous warning; it is
    skipped at start with its name, like an undecodable file, and training uses the rest."""
    good = (DATA / "mate-aqua.jpg").read_bytes()
    (tmp_path / "ok.jpg").write_bytes(good)
    (tmp_path / "cut.jpg").write_bytes(good[: len(good) // 2])
    (tmp_path / "cut.png").write_bytes(cv2_png(good)[:-20])
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with caplog.at_level("WARNING", logger="training.data"):
        ds = InpaintingDataset(find_images(tmp_path), 64, make_policy("general"), cache_images=cache)
    assert [p.name for p in ds.paths] == ["ok.jpg"]
    text = caplog.text
    assert "cut.jpg: truncated or corrupt JPEG" in text and "cut.png: truncated or corrupt PNG" in text
    assert "broken.jpg: not a readable image" in text
    assert ds[0]["image"].shape == (3, 64, 64)


def cv2_png(jpeg: bytes) -> bytes:
    import cv2

    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    return cv2.imencode(".png", img)[1].tobytes()


def test_bad_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="image folder not found"):
        find_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no images found"):
        find_images(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.jpg").write_bytes(b"not a jpeg")
    (bad / "ok.jpg").write_bytes((DATA / "mate-aqua.jpg").read_bytes())
    with pytest.raises(DataError, match="no usable training images .*broken.jpg: not a readable image"):
        InpaintingDataset([bad / "broken.jpg"], 64, make_policy("general"))
    with pytest.raises(DataError, match="held-out image\\(s\\) not found: missing.jpg"):
        split_holdout(find_images(bad), bad, ["missing.jpg"])
    # the CLI: exit code 2 and one line naming the folder
    r = subprocess.run([sys.executable, "-m", "training.train", "--config", "glama-tiny",
                        "--set", f"data.root={tmp_path / 'nope'}", "--set", "data.holdout=[]"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error: ") and "nope" in r.stderr


# ------------------------------------------------------------------------------------- loop

def _fixed_batch(cfg: RunConfig):
    from training.data import collate

    root = Path(cfg.data.root)
    train, _ = split_holdout(find_images(root), root, [HOLDOUT])
    ds = InpaintingDataset(train, cfg.data.crop, make_policy("thick"), seed=99)
    return collate([ds[(0, i)] for i in range(4)])


def _l1_known(G, batch) -> float:
    """Known-pixel L1 of a copy of G in train mode (batch statistics; leaves G untouched)."""
    g = copy.deepcopy(G).train()
    with torch.no_grad():
        pred = g(batch["image"], batch["mask"])
    known = 1 - batch["mask"]
    return float(((pred - batch["image"]).abs() * known).sum() / (known.sum() * 3))


def test_training_steps_reduce_l1_write_checkpoint_and_weights(photos, tmp_path):
    from glama_deploy.model.weights import load_generator
    from training.train import Trainer

    cfg = small_cfg(photos, tmp_path / "run", steps=40, extra=["train.val_every=20", "train.ckpt_every=20",
                                                                "loss.perceptual=recon", "train.keep_every=30"])
    tr = Trainer(cfg)
    batch = _fixed_batch(cfg)
    before = _l1_known(tr.G, batch)
    out = tr.fit()
    after = _l1_known(tr.G, batch)
    assert after < 0.9 * before, (before, after)
    assert all(np.isfinite(v) for v in tr.last_logs.values())
    assert {"g/gen_l1", "g/gen_ffl", "g/gen_tv", "g/gen_adv", "g/gen_recon", "d/discr_r1", "perf/steps_per_sec"} - \
        set(tr.last_logs) == {"perf/steps_per_sec"}
    assert tr.last_logs["g/gen_recon"] > 0 and tr.last_logs["g/gen_pl"] == 0
    assert set(tr.last_val) == ({f"{k}/psnr_{t}" for t in MASK_TYPES for k in ("val", "val_hole")}
                                | {"val/psnr_mean", "val_hole/psnr_mean"})
    # the hole is the hard part: its PSNR is below the whole composite's
    assert tr.last_val["val_hole/psnr_mean"] < tr.last_val["val/psnr_mean"]
    ck = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert ck["step"] == 40 and {"generator", "discriminator", "opt_g", "opt_d", "rng", "config"} <= set(ck)
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert kept == ["last.pt", "previous.pt", "step-30.pt"]
    assert torch.load(tmp_path / "run" / "checkpoints" / "step-30.pt", weights_only=True)["step"] == 30
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))
    model, meta = load_generator(out)
    assert meta["step"] == "40" and meta["training_mode"] == "inpaint"
    assert meta["perceptual"] == "substitute: multi-scale hole L1 (weight 10, scales [1, 2, 4, 8])"
    assert json.loads(meta["losses"])["pl"] == "off (loss.perceptual=recon)"
    assert json.loads(meta["losses"])["recon"] == "on (10), scales [1, 2, 4, 8]"
    assert json.loads(meta["losses"])["ffl"] == "on (1)"
    assert json.loads(meta["training_data"])["holdout"] == [HOLDOUT]
    for k, v in model.state_dict().items():
        assert torch.equal(v, tr.G.state_dict()[k]), k
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["step"] == 40 and summary["stopped"] == "completed"


def test_exact_resume_is_bit_identical(photos, tmp_path):
    from training.train import Trainer

    full = Trainer(small_cfg(photos, tmp_path / "full", steps=6))
    full.fit()
    first = Trainer(small_cfg(photos, tmp_path / "split", steps=3))
    first.fit()
    ckpt = tmp_path / "split" / "checkpoints" / "last.pt"
    second = Trainer(small_cfg(photos, tmp_path / "split", steps=6), resume=ckpt)
    assert second.step == 3
    second.fit()
    for name in ("G", "D"):
        a, b = getattr(full, name).state_dict(), getattr(second, name).state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}.{k} differs after resume"
    sa, sb = full.opt_g.state_dict()["state"], second.opt_g.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)


def test_truncated_last_checkpoint_falls_back_to_previous(photos, tmp_path, caplog):
    """last.pt keeps its predecessor as previous.pt; a damaged last.pt resumes from the newest readable
    checkpoint with a warning; temp files of a killed write are removed at the next start."""
    from training.train import Trainer, main

    out = tmp_path / "run"
    Trainer(small_cfg(photos, out, steps=4, extra=["train.ckpt_every=2"])).fit()
    ck = out / "checkpoints"
    assert sorted(p.name for p in ck.iterdir()) == ["last.pt", "previous.pt"]
    assert torch.load(ck / "previous.pt", weights_only=True)["step"] == 2
    data = (ck / "last.pt").read_bytes()
    (ck / "last.pt").write_bytes(data[: len(data) // 3])  # a truncated copy
    (ck / ".last.pt.abc123.tmp").write_bytes(b"half a write")
    with caplog.at_level("WARNING", logger="training.train"):
        assert main(["--resume", str(ck / "last.pt"), "--set", "train.steps=5", "-q"]) == 0
    assert "resuming from" in caplog.text and "previous.pt (step 2)" in caplog.text
    assert "truncated or corrupt" in caplog.text
    assert not list(ck.glob(".*.tmp"))
    assert torch.load(ck / "last.pt", weights_only=True)["step"] == 5


def _bad_resume(tmp_path, name: str, data: bytes) -> str:
    (tmp_path / name).write_bytes(data)
    return str(tmp_path / name)


# One row per bad --resume: (name, text the one-line error must contain, the file to resume from).
BAD_RESUMES = [
    ("missing", "checkpoint not found", lambda t: str(t / "none.pt")),
    ("0-byte last.pt", "empty file (0 bytes)", lambda t: _bad_resume(t, "last.pt", b"")),
    ("random bytes", "not a training checkpoint (not a PyTorch file)",
     lambda t: _bad_resume(t, "r.pt", np.random.default_rng(0).bytes(3000))),
    ("a .safetensors weights file", "a weights file, not a training checkpoint",
     lambda t: _bad_resume(t, "w.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{}")),
    ("another torch file", "not a training checkpoint of python -m training.train",
     lambda t: (torch.save({"state_dict": {"w": torch.zeros(2)}}, t / "other.pt"), str(t / "other.pt"))[1]),
    ("a pickle with code", "holds objects other than tensors",
     lambda t: (torch.save({"step": 1, "obj": Path("x")}, t / "code.pt"), str(t / "code.pt"))[1]),
]


@pytest.mark.parametrize("name,needle,make", BAD_RESUMES, ids=[b[0] for b in BAD_RESUMES])
def test_bad_resume_is_one_line_exit_2(tmp_path, capsys, name, needle, make):
    from training.train import main

    assert main(["--resume", make(tmp_path), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert "weights_only=False" not in err[0] and "Traceback" not in err[0]


def test_init_weights_fine_tunes_from_our_weights_and_official_checkpoints(photos, tmp_path):
    """model.init_weights: G strictly from a .safetensors or a Lightning .ckpt (official LaMa layout,
    with a config object weights_only refuses); D from the .ckpt when it has a fitting one."""
    from glama_deploy.model import Generator, get_config
    from glama_deploy.model.weights import load_generator, save_weights
    from training.discriminator import NLayerDiscriminator
    from training.train import Trainer

    torch.manual_seed(1)
    g = Generator("tiny")
    for m in g.modules():  # non-default statistics, so a fresh G cannot pass for the loaded one
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
    d = NLayerDiscriminator(ndf=16, n_layers=3)
    st = save_weights(g, tmp_path / "g.safetensors", step=7, source="test")

    tr = Trainer(small_cfg(photos, tmp_path / "a", steps=2, extra=[f"model.init_weights={st}"]))
    assert all(torch.equal(v, tr.G.state_dict()[k]) for k, v in g.state_dict().items())
    assert tr.init_note == f"G from {st} (step 7), D fresh"
    out = tr.fit()
    _, meta = load_generator(out)
    assert meta["init"] == tr.init_note and meta["step"] == "2"

    ckpt = tmp_path / "best.ckpt"
    state = {**{f"generator.{k}": v for k, v in g.state_dict().items()},
             **{f"discriminator.{k}": v for k, v in d.state_dict().items()},
             "loss_resnet_pl.impl.conv1.weight": torch.zeros(1)}
    torch.save({"state_dict": state, "global_step": 1000, "hyper_parameters": {"config": Path("lama.yaml")}}, ckpt)
    tr = Trainer(small_cfg(photos, tmp_path / "b", steps=0, extra=[f"model.init_weights={ckpt}"]))
    assert all(torch.equal(v, tr.G.state_dict()[k]) for k, v in g.state_dict().items())
    assert all(torch.equal(v, tr.D.state_dict()[k]) for k, v in d.state_dict().items())
    assert tr.init_note == f"G from {ckpt} (step 1000), D from the same file"
    # a discriminator of another width is skipped, not half-loaded
    tr = Trainer(small_cfg(photos, tmp_path / "c", steps=0, extra=[f"model.init_weights={ckpt}",
                                                                   "model.disc_ndf=8"]))
    assert tr.init_note.endswith("D fresh (the file's discriminator does not fit model.disc_*)")
    # the resumed run keeps its init note; a wrong architecture is a one-line config error
    resumed = Trainer(small_cfg(photos, tmp_path / "a", steps=2), resume=tmp_path / "a" / "checkpoints" / "last.pt")
    assert resumed.init_note == f"G from {st} (step 7), D fresh"
    other = save_weights(Generator(get_config("tiny", ngf=8)), tmp_path / "other.safetensors", step=0, source="t")
    with pytest.raises(ConfigError, match="model.init_weights: .*other.safetensors: does not match generator 'tiny'"):
        Trainer(small_cfg(photos, tmp_path / "d", steps=0, extra=[f"model.init_weights={other}"]))


def test_refine_coarse_input_is_the_pipelines_known_pixel_rule():
    """Refine training feeds the coarse model what the pipeline's coarse pass feeds it: a
    Nearest-Neighbour mask (~90% hole) keeps every low-res pixel known (the old any-hole rule made
    it 100% hole), with the mean of each cell's known pixels, equal to the pipeline's downscale."""
    from glama_deploy.pipeline.layout import Rect
    from glama_deploy.pipeline.scaling import downscale
    from training.masks import MASK_TYPES
    from training.refine import downscale_known

    img = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    m = MASK_TYPES["nearest_neighbor"]()(256, 256, np.random.default_rng(0))
    mask = torch.from_numpy(m.astype(np.float32))[None, None]
    assert mask.mean() > 0.8
    small, small_mask = downscale_known(img, mask, 4)
    ref, ref_mask = downscale(img[0].numpy(), m.astype(np.float32), Rect(0, 256, 0, 256), (64, 64))
    assert small_mask.sum() == 0 and np.array_equal(small_mask.numpy(), ref_mask)
    assert np.allclose(small.numpy(), ref, atol=1e-5)


def test_shipped_refine_config_runs_the_coarse_model_at_the_pipelines_scale():
    """The refine model learns to fix what the pipeline's coarse pass (256 px) leaves; trained on a
    coarse fill made at 64 px it would see a much blurrier fill than it gets at inference."""
    import inspect

    from glama_deploy.pipeline import run

    cfg = load_config(CONFIG_DIR / "refine-tiny.yaml")
    coarse_size = inspect.signature(run).parameters["coarse_size"].default
    assert cfg.data.crop // cfg.refine.coarse_factor == coarse_size == 256


def test_refine_mode_trains_on_coarse_fill(photos, tmp_path):
    from glama_deploy.model import Generator
    from glama_deploy.model.weights import load_generator, save_weights
    from training.train import Trainer, coarse_fill

    torch.manual_seed(0)
    coarse_path = save_weights(Generator("tiny"), tmp_path / "coarse.safetensors", step=0, source="test")
    cfg = small_cfg(photos, tmp_path / "refine", steps=2, config="refine-tiny",
                    extra=[f"refine.coarse_weights={coarse_path}", "refine.coarse_factor=4",
                           "train.bn_recalib_batches=3"])
    tr = Trainer(cfg)
    assert tr.G.config.zero_holes is False and tr.coarse is not None
    # the refine input: original outside the holes, the upsampled coarse fill inside
    img, mask = torch.rand(1, 3, 64, 64), torch.zeros(1, 1, 64, 64)
    mask[..., 16:48, 16:48] = 1
    x = coarse_fill(tr.coarse, img, mask, 4)
    assert torch.equal(x * (1 - mask), img * (1 - mask))
    assert not torch.allclose(x * mask, img * mask)
    out = tr.fit()
    model, meta = load_generator(out)
    assert meta["training_mode"] == "refine" and model.config.zero_holes is False
    # exported BatchNorm statistics were re-estimated; the trainer's own generator is untouched
    assert meta["bn_statistics"].startswith("re-estimated over 3")
    key = "model.1.bn_l.running_mean"
    assert not torch.equal(model.state_dict()[key], tr.G.state_dict()[key])
    assert all(torch.equal(v, tr.G.state_dict()[k]) for k, v in model.state_dict().items() if "running" not in k
               and "num_batches" not in k)
    with pytest.raises(ConfigError, match="coarse_weights"):
        small_cfg(photos, tmp_path / "r2", config="refine-tiny", extra=["refine.coarse_weights="])


def test_ddp_two_cpu_processes(photos, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "training.train", "--config", str(CONFIG_DIR / "glama-tiny.yaml"), "-q"]
    for o in small_overrides(photos, out, steps=3):
        cmd += ["--set", o]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    sums = summary["rank_generator_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1], sums
    assert summary["step"] == 3
    from glama_deploy.model.weights import load_generator

    _, meta = load_generator(out / "generator.safetensors")
    assert meta["world_size"] == "2"


def test_discriminator_not_trained_when_no_loss_reads_it(photos, tmp_path):
    """adv = fm = 0: the D step is skipped (it would cost ~40% of a step for nothing); G still learns."""
    from training.train import Trainer

    cfg = small_cfg(photos, tmp_path / "run", steps=2, extra=["loss.adv=0", "loss.fm=0", "loss.perceptual=recon"])
    tr = Trainer(cfg)
    d0 = copy.deepcopy(tr.D.state_dict())
    g0 = copy.deepcopy(tr.G.state_dict())
    logs = tr.train_step(_fixed_batch(cfg))
    assert all(torch.equal(d0[k], v) for k, v in tr.D.state_dict().items())
    assert not all(torch.equal(g0[k], v) for k, v in tr.G.state_dict().items())
    assert "loss/d_total" not in logs and logs["g/gen_recon"] > 0


def test_perceptual_note_names_the_substitute_norm():
    from training.reporting import perceptual_note

    small = load_config(CONFIG_DIR / "glama-small.yaml")
    expected = "substitute: multi-scale hole squared error (weight 100, scales [1, 2, 4, 8])"
    assert perceptual_note(small, False) == expected
    l1 = load_config(CONFIG_DIR / "glama-small.yaml", ["loss.recon_norm=l1", "loss.recon=10"])
    assert perceptual_note(l1, False) == "substitute: multi-scale hole L1 (weight 10, scales [1, 2, 4, 8])"
