"""The browser page: ``python -m glama_deploy.app`` (see :mod:`.__main__`), on the same engines and
pipeline as the CLI. Needs the ``[app]`` extra (starlette, uvicorn, python-multipart)."""

from __future__ import annotations


def __getattr__(name: str):
    if name in ("Limits", "create_app"):  # lazy: `--help` works before the extra is installed
        from . import server

        return getattr(server, name)
    raise AttributeError(name)


__all__ = ["Limits", "create_app"]
