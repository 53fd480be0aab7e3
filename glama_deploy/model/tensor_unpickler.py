"""Read the tensors of a PyTorch checkpoint that ``weights_only=True`` refuses, without running its code.

PyTorch-Lightning checkpoints often carry non-tensor objects besides the weights: OmegaConf
configs in ``hyper_parameters``, ``pathlib`` paths or numpy scalars in callback states. With
``torch.load(weights_only=True)`` one such object makes the whole file unreadable, and the usual
advice (``weights_only=False``) executes whatever the pickle asks for.

This reader trusts exactly the globals ``weights_only=True`` trusts (tensor and storage rebuild
functions, ``OrderedDict``, dtypes, ...) and turns every other global into an inert placeholder
(:class:`Opaque`) that only records its arguments. This is the "restricting globals" pattern of the
:mod:`pickle` documentation: class resolution goes through ``find_class`` alone, so no function or
constructor outside torch's allow-list is ever called. The placeholders are returned in place of
the objects; callers keep the tensors and report which globals were skipped.
"""

from __future__ import annotations

import _compat_pickle
import collections
import os
import pickle
import types
from typing import Any

import torch


class Opaque(dict):
    """Stand-in for an object whose class was not trusted: remembers how it was built, does nothing.

    It subclasses ``dict`` so that pickles of dict subclasses (``SETITEMS``) still load, and has
    ``append``/``extend`` for list subclasses (``APPENDS``).
    """

    global_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Opaque:
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.args = args
        self.state: Any = None
        self.items_appended: list[Any] = []

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def append(self, item: Any) -> None:
        self.items_appended.append(item)

    def extend(self, items: Any) -> None:
        self.items_appended.extend(items)

    def __repr__(self) -> str:
        return f"<not loaded: {self.global_name}>"


def _trusted_globals() -> dict[str, Any]:
    """The globals torch itself allows under ``weights_only=True``."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        return dict(_get_allowed_globals())
    except Exception:  # private API; fall back to the tensor essentials
        import torch._utils as tu

        allowed: dict[str, Any] = {"collections.OrderedDict": collections.OrderedDict, "torch.Size": torch.Size}
        for name in ("_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_parameter_with_state"):
            if hasattr(tu, name):
                allowed[f"torch._utils.{name}"] = getattr(tu, name)
        for name in dir(torch):
            if isinstance(getattr(torch, name, None), torch.dtype):
                allowed[f"torch.{name}"] = getattr(torch, name)
        return allowed


def _make_pickle_module(skipped: set[str]) -> types.ModuleType:
    trusted = _trusted_globals()
    placeholders: dict[str, type] = {}

    class RestrictedUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            # protocol-2 pickles (torch.save's default) name Python 2 modules, e.g. __builtin__
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
            full = f"{module}.{name}"
            if full in trusted:
                return trusted[full]
            skipped.add(full)
            if full not in placeholders:  # one class per global, so the file's structure is kept
                placeholders[full] = type("Opaque", (Opaque,), {"global_name": full})
            return placeholders[full]

    def load(file: Any, **kwargs: Any) -> Any:
        return RestrictedUnpickler(file, **kwargs).load()

    mod = types.ModuleType("glama_restricted_pickle")
    mod.Unpickler = RestrictedUnpickler  # type: ignore[attr-defined]
    mod.load = load  # type: ignore[attr-defined]
    mod.__version__ = pickle.format_version  # type: ignore[attr-defined]
    return mod


def load_tensors_only(path: str | os.PathLike) -> tuple[Any, list[str]]:
    """Load ``path`` like ``torch.load(map_location='cpu')``, with untrusted globals as :class:`Opaque`.

    Returns the loaded object and the sorted names of the globals that were replaced.
    """
    skipped: set[str] = set()
    # weights_only=False only lifts torch's own opcode filter: our pickle module's find_class is
    # the gate now, and it never returns a callable outside torch's weights_only allow-list.
    obj = torch.load(str(path), map_location="cpu", weights_only=False, pickle_module=_make_pickle_module(skipped))
    return obj, sorted(skipped)
