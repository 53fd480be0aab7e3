"""Named models: a registry (:mod:`.registry`), a verified download cache (:mod:`.cache`,
:mod:`.download`, :mod:`.unpack`) and :func:`resolve_weights`, which every entry point calls on its
``--weights`` value. CLI: ``python -m glama_deploy.weights get|list|path|rm``.

(Not to be confused with :mod:`glama_deploy.model.weights`, which reads and writes weights files;
this package finds them.) Importing it does not import torch.
"""

from .cache import cache_root
from .download import DownloadError
from .manager import get_model, resolve_weights
from .registry import DEFAULT_MODEL, REGISTRY, ModelEntry, register

__all__ = ["DEFAULT_MODEL", "REGISTRY", "DownloadError", "ModelEntry", "cache_root", "get_model", "register",
           "resolve_weights"]
