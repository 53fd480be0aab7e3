"""The model registry's facts, and `--weights NAME` in every entry point (local lama_server, no network)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

import cv2
import numpy as np
import pytest
import torch

from glama_deploy.errors import InputError
from glama_deploy.model import CONFIGS, build_generator, count_parameters
from glama_deploy.weights import REGISTRY, resolve_weights
from glama_deploy.weights.registry import DEFAULT_MODEL

from .conftest import DEFAULT_WEIGHTS, ROOT, SAMPLES
from .weights_server import NAME, serve

pytest_plugins = ["tests.weights_fixtures"]  # fixtures: lama_server, glama_home, lama_archive, lama_src


def test_every_url_is_https_and_every_config_is_one_the_loader_knows():
    assert REGISTRY, "empty registry"
    for name, e in REGISTRY.items():
        assert e.name == name
        assert e.config in CONFIGS, (name, e.config)
        for url in e.urls:
            assert urlparse(url).scheme == "https" and urlparse(url).netloc, (name, url)
        if e.downloadable:
            assert e.urls and e.licence and e.source and e.format in ("lama-zip", "checkpoint")
        assert e.sha256 is None or (len(e.sha256) == 64 and int(e.sha256, 16) >= 0)
        assert count_parameters(build_generator(e.config)) == e.parameters, name


def test_registry_records_what_the_official_sources_publish():
    big = REGISTRY["big-lama"]
    # the official README's command: curl -LJO https://huggingface.co/smartywu/big-lama/resolve/main/big-lama.zip
    assert big.urls[0] == "https://huggingface.co/smartywu/big-lama/resolve/main/big-lama.zip"
    assert big.size == 381_428_720  # Hugging Face LFS pointer of big-lama.zip (commit 05cb2be)
    assert big.sha256 == "f1b358ca24093b93a106183b98a3dea6e8ed09f3b43ea7251eb2c81e7b4575f6"
    assert big.parameters == 50_975_875 and big.config == "big-lama" and big.member == "models/best.ckpt"
    default = REGISTRY[DEFAULT_MODEL]
    assert default.format == "bundled" and default.config == "small"
    assert resolve_weights(DEFAULT_MODEL) == DEFAULT_WEIGHTS and DEFAULT_WEIGHTS.is_file()


def test_paths_pass_through_and_unknown_names_are_one_line_errors(tmp_path):
    assert resolve_weights(tmp_path / "w.safetensors") == tmp_path / "w.safetensors"  # checked later, as before
    assert resolve_weights("model.onnx") == Path("model.onnx")
    with pytest.raises(InputError, match="big-lamma: no such file, nor a model name .known: big-lama, glama-small"):
        resolve_weights("big-lamma")


def test_list_needs_no_torch():
    code = ("import sys; from glama_deploy.weights.__main__ import main; rc = main(['list', '--json']); "
            "print('torch' in sys.modules, rc, file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.stderr.split()[-2:] == ["False", "0"], r.stderr
    names = [m["name"] for m in json.loads(r.stdout)["models"]]
    assert "big-lama" in names and DEFAULT_MODEL in names


@pytest.fixture()
def photo(tmp_path):
    img = cv2.resize(cv2.imread(str(SAMPLES / "mate-dune.jpg")), (96, 64), interpolation=cv2.INTER_AREA)
    mask = np.zeros(img.shape[:2], np.uint8)
    mask[20:44, 30:70] = 255
    cv2.imwrite(str(tmp_path / "p.png"), img)
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    return tmp_path / "p.png", tmp_path / "m.png"


def test_infer_fetches_a_name_on_first_use_and_honours_offline(lama_server, glama_home, monkeypatch, lama_archive,
                                                               photo, capsys):
    from glama_deploy.infer import main as infer

    serve(lama_server, monkeypatch, lama_archive)
    img, mask = photo
    args = ["--image", str(img), "--mask", str(mask), "--quiet"]
    assert infer([*args, "--out", str(glama_home.parent / "a.png"), "--weights", NAME, "--offline"]) == 2
    assert "offline mode is on (--offline)" in capsys.readouterr().err and lama_server.b.ranges == []
    assert infer([*args, "--out", str(glama_home.parent / "a.png"), "--weights", NAME]) == 0
    cached = glama_home / "models" / NAME / f"{NAME}.safetensors"
    assert cached.is_file() and len(lama_server.b.ranges) == 1
    assert infer([*args, "--out", str(glama_home.parent / "b.png"), "--weights", str(cached), "--offline"]) == 0
    a, b = cv2.imread(str(glama_home.parent / "a.png")), cv2.imread(str(glama_home.parent / "b.png"))
    assert np.array_equal(a, b) and not np.array_equal(a, cv2.imread(str(img)))
    assert len(lama_server.b.ranges) == 1  # the second run used the cache


def _fake_export(calls):
    def export_onnx(model, out, **kw):
        calls.append(model)
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_bytes(b"fake onnx")
        return {"out": str(out), "bytes": 9, "opset": 17, "parity_max_abs": {}}
    return export_onnx


def test_export_and_build_repo_resolve_names(lama_server, glama_home, monkeypatch, lama_archive, lama_src, tmp_path,
                                             capsys):
    """The exporter itself is tested in test_onnx_export.py (minutes here); this checks what it is given."""
    import export.onnx as onnx_cli
    from glama_deploy.triton.__main__ import main as triton

    serve(lama_server, monkeypatch, lama_archive)
    calls: list = []
    monkeypatch.setattr(onnx_cli, "export_onnx", _fake_export(calls))
    assert onnx_cli.main(["--weights", NAME, "--out", str(tmp_path / "m.onnx")]) == 0
    assert len(calls) == 1 and len(lama_server.b.ranges) == 1
    for k, v in lama_src.state_dict().items():
        assert torch.equal(calls[0].state_dict()[k], v), k

    repo = tmp_path / "repo"
    assert triton(["build-repo", "--flavour", "cpu", "--weights", NAME, "--out", str(repo)]) == 0
    assert (repo / "glama_onnx_py" / "1" / "model.onnx").read_bytes() == b"fake onnx"
    assert len(calls) == 2 and torch.equal(calls[1].state_dict()["model.1.ffc.convl2l.weight"],
                                           lama_src.state_dict()["model.1.ffc.convl2l.weight"])
    assert triton(["build-repo", "--flavour", "cpu", "--weights", NAME, "--out", str(tmp_path / "r2")]) == 0
    assert len(calls) == 2 and len(lama_server.b.ranges) == 1  # the export and the download are cached
    capsys.readouterr()
    assert triton(["build-repo", "--weights", "no-such-model", "--out", str(tmp_path / "r3")]) == 2
    assert "no-such-model: no such file, nor a model name" in capsys.readouterr().err


def test_training_init_weights_takes_a_name(lama_server, glama_home, monkeypatch, lama_archive, lama_src):
    from glama_deploy.model import Generator
    from training.config import ConfigError
    from training.discriminator import NLayerDiscriminator
    from training.trainer import Trainer

    serve(lama_server, monkeypatch, lama_archive)
    fake = SimpleNamespace(G=Generator("tiny"), D=NLayerDiscriminator(ndf=16, n_layers=3),
                           d=SimpleNamespace(main=False))
    note = Trainer._init_from(fake, NAME)
    assert note.startswith(f"G from {glama_home / 'models' / NAME / NAME}.safetensors (step 1234)")
    for k, v in lama_src.state_dict().items():
        assert torch.equal(fake.G.state_dict()[k], v), k
    with pytest.raises(ConfigError, match="model.init_weights: big-lamma: no such file, nor a model name"):
        Trainer._init_from(fake, "big-lamma")


def test_benchmarks_resolve_names(lama_server, glama_home, monkeypatch, lama_archive, tmp_path):
    import benchmarks.run as bench
    from benchmarks import common

    serve(lama_server, monkeypatch, lama_archive)
    for var in common.THREAD_VARS:  # main sets them for its workers: restore them afterwards
        monkeypatch.setenv(var, "2")
    seen = []

    def stop(config, weights, cache, seed):
        seen.append(weights)
        raise ValueError("stop here")

    monkeypatch.setattr(bench, "prepare_weights", stop)
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--weights", NAME, "--out", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"),
                           "--threads", str(threads)]) == 2
    finally:
        torch.set_num_threads(threads)
    assert seen == [str(glama_home / "models" / NAME / f"{NAME}.safetensors")]
