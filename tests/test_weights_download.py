"""`python -m glama_deploy.weights` and `--weights NAME` against a local HTTP lama_server (never the real URLs).

The lama_server serves a synthetic `big-lama.zip`-shaped lama_archive (`big-lama/models/best.ckpt`, a
Lightning-style checkpoint of the `tiny` config with an OmegaConf-like object weights_only refuses,
plus `big-lama/config.yaml`) and can cut the connection, answer 404 or ignore Range.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest
import torch

from glama_deploy.model import get_config
from glama_deploy.model.weights import load_generator, read_weights
from glama_deploy.weights import cache
from glama_deploy.weights import download as dl
from glama_deploy.weights.__main__ import main
from glama_deploy.weights.registry import REGISTRY, ModelEntry

from .conftest import make_model
from .weights_server import NAME, Server, lama_zip, serve

pytest_plugins = ["tests.weights_fixtures"]  # fixtures: lama_server, glama_home, lama_archive, lama_src

def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0]
    return err[0]


def nothing_half_written(glama_home: Path) -> None:
    leftovers = [p for p in glama_home.rglob("*") if p.is_file() and (p.suffix in (".tmp", ".incomplete")
                                                                 or ".unpack-" in str(p))]
    assert not leftovers, leftovers
    assert not (glama_home / "models" / NAME / f"{NAME}.safetensors").exists()


def test_get_verifies_converts_caches_and_rm(lama_server, glama_home, monkeypatch, lama_archive, lama_src, capsys):
    entry = serve(lama_server, monkeypatch, lama_archive)
    assert main(["get", NAME, "--quiet"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == glama_home / "models" / NAME / f"{NAME}.safetensors"
    model, meta = load_generator(path)
    assert model.config.name == "tiny"
    for k, v in lama_src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert meta["source"] == entry.urls[0] and meta["sha256"] == entry.sha256
    assert meta["licence"] == "Apache-2.0" and meta["dtype"] == "float32" and meta["date"].startswith("20")
    assert meta["step"] == "1234" and "n_blocks: 4" in meta["lama_config_yaml"]
    assert "_Config" in meta["skipped_objects"]  # the OmegaConf-like object was never run
    record = json.loads((glama_home / "models" / NAME / "source.json").read_text())
    assert record["sha256"] == entry.sha256 and record["size"] == len(lama_archive)
    assert not list((glama_home / "downloads").glob("*.incomplete"))  # converted: the lama_archive is not kept

    requests = len(lama_server.b.ranges)
    assert main(["get", NAME, "--quiet"]) == 0 and len(lama_server.b.ranges) == requests  # cached: no request
    assert capsys.readouterr().out.strip() == str(path)
    assert main(["list", "--json"]) == 0
    row = next(r for r in json.loads(capsys.readouterr().out)["models"] if r["name"] == NAME)
    assert row["cached"] == [str(path)]
    assert main(["path", NAME]) == 0 and capsys.readouterr().out.strip() == str(path)

    assert main(["get", NAME, "--fp16", "--quiet"]) == 0  # from the cached fp32 file, no download
    assert len(lama_server.b.ranges) == requests
    half = Path(capsys.readouterr().out.strip())
    state, meta16 = read_weights(half)
    assert all(v.dtype == torch.float16 for k, v in state.items() if v.is_floating_point())
    assert meta16["dtype"] == "float16" and meta16["sha256"] == entry.sha256
    assert half.stat().st_size < 0.6 * path.stat().st_size
    loaded, _ = load_generator(half)  # fp16 files load into the fp32 generator
    assert torch.allclose(loaded.state_dict()["model.1.ffc.convl2l.weight"],
                          lama_src.state_dict()["model.1.ffc.convl2l.weight"], atol=1e-3)

    assert main(["rm", NAME]) == 0
    assert not (glama_home / "models" / NAME).exists()
    assert main(["path", NAME]) == 1


def test_resume_after_dropped_connection(lama_server, glama_home, monkeypatch, lama_archive, lama_src, capsys):
    serve(lama_server, monkeypatch, lama_archive)
    cut = len(lama_archive) // 3
    lama_server.b.cut_after = cut
    assert main(["get", NAME, "--quiet"]) == 2
    line = one_error_line(capsys)
    assert f"connection dropped after {cut:,} of {len(lama_archive):,} bytes" in line and lama_server.url("/") in line
    part = glama_home / "downloads" / f"{NAME}.zip.incomplete"
    assert part.stat().st_size == cut  # kept, to resume
    assert not (glama_home / "models" / NAME / f"{NAME}.safetensors").exists()

    lama_server.b.cut_after = None
    assert main(["get", NAME, "--quiet"]) == 0
    assert lama_server.b.ranges[-1] == f"bytes={cut}-"  # resumed, not restarted
    model, _ = load_generator(capsys.readouterr().out.strip())
    key = "model.1.ffc.convl2l.weight"
    assert torch.equal(model.state_dict()[key], lama_src.state_dict()[key])


def test_server_that_ignores_range_restarts_from_zero(lama_server, glama_home, monkeypatch, lama_archive, capsys):
    serve(lama_server, monkeypatch, lama_archive)
    part = glama_home / "downloads" / f"{NAME}.zip.incomplete"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 1000)  # a partial that is not even a prefix of the file
    lama_server.b.honour_range = False
    assert main(["get", NAME, "--quiet"]) == 0  # answered 200: the file started over and verified
    assert lama_server.b.ranges == ["bytes=1000-"]


def test_sha_mismatch_deletes_and_never_replaces_a_good_copy(lama_server, glama_home, monkeypatch, lama_archive,
                                                             capsys):
    serve(lama_server, monkeypatch, lama_archive, sha="0" * 64)
    assert main(["get", NAME, "--quiet"]) == 2
    line = one_error_line(capsys)
    assert f"sha256 {hashlib.sha256(lama_archive).hexdigest()} differs from the registry's {'0' * 64}" in line
    nothing_half_written(glama_home)

    serve(lama_server, monkeypatch, lama_archive)  # a good copy in the cache ...
    assert main(["get", NAME, "--quiet"]) == 0
    good = Path(capsys.readouterr().out.strip())
    before = good.read_bytes()
    bad = lama_archive[:100] + bytes([lama_archive[100] ^ 0xFF]) + lama_archive[101:]
    lama_server.b.files["/big-lama.zip"] = bad  # ... then the lama_server serves a corrupt file
    assert main(["get", NAME, "--force", "--quiet"]) == 2
    assert "differs from the registry's" in one_error_line(capsys)
    assert good.read_bytes() == before
    assert not list((glama_home / "downloads").glob("*.incomplete"))


def test_trust_on_first_download_when_no_sha_is_published(lama_server, glama_home, monkeypatch, lama_archive,
                                                          tmp_path, capsys):
    serve(lama_server, monkeypatch, lama_archive, sha=None, size=False)
    assert main(["get", NAME, "--quiet"]) == 0
    recorded = json.loads((glama_home / "known_sha256.json").read_text())
    assert recorded == {NAME: hashlib.sha256(lama_archive).hexdigest()}
    assert main(["rm", NAME]) == 0
    capsys.readouterr()
    other = lama_zip(make_model("tiny", seed=9, lively=False), tmp_path)  # the URL now serves other bytes
    lama_server.b.files["/big-lama.zip"] = other
    assert main(["get", NAME, "--quiet"]) == 2
    assert "differs from the first download's" in one_error_line(capsys)
    nothing_half_written(glama_home)
    assert main(["rm", NAME, "--forget-sha256"]) == 0
    assert main(["get", NAME, "--quiet"]) == 0


@pytest.mark.parametrize("case", ["404", "no best.ckpt", "wrong architecture", "not a zip", "disk full"])
def test_failures_are_one_line_exit_2_and_leave_nothing(lama_server, glama_home, monkeypatch, lama_archive,
                                                        tmp_path, capsys, case):
    data, needle = lama_archive, ""
    if case == "404":
        lama_server.b.not_found, needle = True, "HTTP 404 Not Found"
    elif case == "no best.ckpt":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("big-lama/config.yaml", "x: 1\n")
            z.writestr("big-lama/models/last.ckpt", b"...")
        data, needle = buf.getvalue(), "no models/best.ckpt inside (found: big-lama/config.yaml"
    elif case == "wrong architecture":
        from glama_deploy.model import Generator

        data = lama_zip(Generator(get_config("tiny", ngf=8)), tmp_path)
        needle = "(models/best.ckpt): does not match generator 'tiny'"
    elif case == "not a zip":
        data, needle = b"<html>rate limited</html>" * 40, "not a readable zip archive"
    else:
        real_open = dl._open_part

        class Full:
            def __init__(self, f):
                self.f, self.n = f, 0

            def write(self, b):
                self.n += len(b)
                if self.n > 2000:
                    raise OSError(errno.ENOSPC, "No space left on device")
                return self.f.write(b)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

        monkeypatch.setattr(dl, "_open_part", lambda path, append: Full(real_open(path, append)))
        needle = "disk full after"
    serve(lama_server, monkeypatch, data)
    assert main(["get", NAME, "--quiet"]) == 2
    line = one_error_line(capsys)
    assert needle in line, line
    if case != "disk full":  # (that one names the folder whose disk is full)
        assert str(glama_home) not in line  # errors name the URL, not paths inside the cache
    nothing_half_written(glama_home)


def test_offline_and_no_network_name_the_url_and_the_flag(lama_server, glama_home, monkeypatch, lama_archive,
                                                          tmp_path, capsys):
    from glama_deploy.errors import WeightsError
    from glama_deploy.weights import resolve_weights

    entry = serve(lama_server, monkeypatch, lama_archive)
    monkeypatch.setenv("GLAMA_OFFLINE", "1")
    with pytest.raises(WeightsError, match="offline mode is on .GLAMA_OFFLINE=1.") as e:
        resolve_weights(NAME)
    assert entry.urls[0] in str(e.value) and "--weights big-lama/models/best.ckpt" in str(e.value)
    monkeypatch.delenv("GLAMA_OFFLINE")
    assert main(["get", NAME, "--offline"]) == 2
    assert "(--offline)" in one_error_line(capsys)
    assert lama_server.b.ranges == [] and not glama_home.exists()  # offline: no request, nothing written

    closed = Server()
    url = closed.url("/big-lama.zip")
    closed.close()  # nothing listens there any more: a machine without network
    monkeypatch.setitem(REGISTRY, NAME, ModelEntry(**{**entry.__dict__, "urls": (url,)}))
    assert main(["get", NAME]) == 2
    line = one_error_line(capsys)
    assert f"cannot download: {url}: cannot connect" in line
    assert f"fetch {url} by hand" in line and "--weights big-lama/models/best.ckpt" in line
    assert f"get {NAME} --from-file big-lama.zip" in line
    nothing_half_written(glama_home)

    by_hand = tmp_path / "big-lama.zip"  # what the message tells the user to do
    by_hand.write_bytes(lama_archive)
    assert main(["get", NAME, "--from-file", str(by_hand), "--offline", "--quiet"]) == 0
    assert by_hand.read_bytes() == lama_archive  # the user's file is left alone


def test_unsafe_archives_are_refused_before_anything_is_written(tmp_path):
    from glama_deploy.weights.unpack import unpack_lama_zip

    def make(entries):
        path = tmp_path / "a.zip"
        with zipfile.ZipFile(path, "w") as z:
            for info, data in entries:
                z.writestr(info, data)
        return path

    into = tmp_path / "out" / "x"
    cases = {
        "points outside the folder": [("big-lama/models/best.ckpt", b"x"), ("big-lama/../../evil.txt", b"x")],
        "is an absolute path": [("/tmp/evil.txt", b"x"), ("big-lama/models/best.ckpt", b"x")],
    }
    link = zipfile.ZipInfo("big-lama/models/best.ckpt")
    link.external_attr = (0o120777 << 16)  # a symlink entry
    cases["is a symlink"] = [(link, "/etc/passwd")]
    for needle, entries in cases.items():
        with pytest.raises(dl.DownloadError, match=needle):
            unpack_lama_zip(make(entries), into)
        assert not into.exists() and not (tmp_path / "evil.txt").exists()
    with pytest.raises(dl.DownloadError, match=r"would unpack to 5,000 bytes \(cap 4,096\)"):
        unpack_lama_zip(make([("big-lama/models/best.ckpt", b"\0" * 5000)]), into, max_unpacked=4096)
    ok, config = unpack_lama_zip(make([("big-lama/models/best.ckpt", b"ckpt"), ("big-lama/config.yaml", b"a: 1")]),
                                 into)
    assert ok.read_bytes() == b"ckpt" and config == "a: 1" and sorted(p.name for p in into.iterdir()) == ["best.ckpt"]


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.delenv("GLAMA_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_root() == tmp_path / "xdg" / "glama-deploy"
    monkeypatch.setenv("GLAMA_HOME", str(tmp_path / "g"))
    assert cache.cache_root() == tmp_path / "g"


def test_concurrent_gets_download_once(lama_server, glama_home, monkeypatch, lama_archive):
    """Several processes resolving one name (DDP ranks) share one download: a lock per name."""
    import threading

    from glama_deploy.weights import get_model

    serve(lama_server, monkeypatch, lama_archive)
    paths, errors = [], []

    def worker():
        try:
            paths.append(get_model(NAME, progress=False))
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(paths) == 3 and len(set(paths)) == 1
    assert lama_server.b.ranges == [None]  # one request, from the start


def test_next_url_is_tried_when_the_first_refuses(lama_server, glama_home, monkeypatch, lama_archive, capsys):
    """404 or another size on the official URL (nothing downloaded): the pinned mirror is tried next."""
    entry = serve(lama_server, monkeypatch, lama_archive)
    lama_server.b.files["/moved.zip"] = lama_archive + b"x"  # e.g. 'main' now holds another file
    for first in ("/gone.zip", "/moved.zip"):
        monkeypatch.setitem(REGISTRY, NAME, ModelEntry(**{**entry.__dict__,
                                                          "urls": (lama_server.url(first), entry.urls[0])}))
        assert main(["get", NAME, "--quiet", "--force"]) == 0, capsys.readouterr().err
    assert not list(glama_home.rglob("*.incomplete"))
    monkeypatch.setitem(REGISTRY, NAME, ModelEntry(**{**entry.__dict__, "urls": (lama_server.url("/gone.zip"),
                                                                               lama_server.url("/moved.zip"))}))
    assert main(["get", NAME, "--quiet", "--force"]) == 2
    line = one_error_line(capsys)
    assert "/gone.zip: HTTP 404 Not Found (and 1 mirror(s) failed too)" in line
