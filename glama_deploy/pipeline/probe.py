"""Does an engine's model read the pixels under the mask? (refine model vs LaMa-style)"""

from __future__ import annotations

import logging
import weakref

import numpy as np

from .layout import ALIGN

log = logging.getLogger(__name__)

_SEES_HOLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def sees_hole_content(engine) -> bool:
    """True if the engine's model reads the pixels under the mask (a refine model built with
    ``zero_holes=False``); False for LaMa-style models, which zero them.

    Read from an engine attribute ``zero_holes`` (any backend may set it), the model config
    (torch), the ONNX metadata (onnxruntime) or a ``config`` entry of a TensorRT plan's sidecar;
    otherwise probed once with a batch of two images that differ only inside the hole (64x64, or
    the smallest size the engine's optimization profile allows). Cached per engine.
    """
    try:
        return _SEES_HOLES[engine]
    except (KeyError, TypeError):
        pass
    result = _inspect_zero_holes(engine)
    sees = _probe_sees_holes(engine) if result is None else not result
    try:
        _SEES_HOLES[engine] = sees
    except TypeError:
        pass
    return sees


def _probe_sees_holes(engine) -> bool:
    side = 64
    profile = getattr(engine, "profile", None)
    if isinstance(profile, dict) and "min" in profile:  # TensorRT: (N, H, W) bounds
        side = max(side, *profile["min"][1:])
        side += -side % ALIGN
    rng = np.random.default_rng(0)
    x = np.repeat(rng.random((1, 3, side, side), dtype=np.float32), 2, axis=0)
    m = np.zeros((2, 1, side, side), np.float32)
    q = side // 4
    m[:, :, q:-q, q:-q] = 1
    x[1, :, q:-q, q:-q] = 1 - x[0, :, q:-q, q:-q]
    try:
        y = engine(x, m)
    except Exception as e:  # e.g. a profile without batch 2: assume the common LaMa-style model
        log.warning(
            "could not probe whether %s reads hole pixels (%s); assuming it zeroes them",
            getattr(engine, "name", engine),
            e,
        )
        return False
    return not np.allclose(y[0], y[1], atol=1e-6)


def _inspect_zero_holes(engine) -> bool | None:
    import json

    if isinstance(getattr(engine, "zero_holes", None), bool):
        return engine.zero_holes
    cfg = getattr(getattr(engine, "model", None), "config", None)
    if isinstance(getattr(cfg, "zero_holes", None), bool):
        return cfg.zero_holes
    sidecar = getattr(engine, "sidecar", None)
    if isinstance(sidecar, dict) and "config" in sidecar:
        cfg = sidecar["config"]
        cfg = json.loads(cfg) if isinstance(cfg, str) else cfg
        if isinstance(cfg, dict) and isinstance(cfg.get("zero_holes"), bool):
            return cfg["zero_holes"]
    session = getattr(engine, "session", None)
    if session is not None:
        try:
            meta = session.get_modelmeta().custom_metadata_map
            return bool(json.loads(meta["config"]).get("zero_holes", True))
        except Exception:  # no / foreign metadata
            return None
    return None
