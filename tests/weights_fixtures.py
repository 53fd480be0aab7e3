"""Fixtures for the model-download tests (loaded with ``pytest_plugins = ["tests.weights_fixtures"]``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import make_model
from .weights_server import Server, lama_zip


@pytest.fixture(scope="module")
def lama_src():
    return make_model("tiny", seed=5, lively=False)


@pytest.fixture(scope="module")
def lama_archive(lama_src, tmp_path_factory) -> bytes:
    return lama_zip(lama_src, tmp_path_factory.mktemp("zip"))


@pytest.fixture()
def lama_server():
    """A local HTTP server (127.0.0.1) the test tells what to serve and how to misbehave."""
    s = Server()
    yield s
    s.close()


@pytest.fixture()
def glama_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("GLAMA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GLAMA_OFFLINE", raising=False)
    return tmp_path / "home"
