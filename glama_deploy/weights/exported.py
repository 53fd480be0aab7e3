"""An ONNX export of a named model or weights file, made once and cached (for Triton build-repo)."""

from __future__ import annotations

from pathlib import Path

from ..errors import WeightsError
from ..fsutil import sha256_file
from .cache import cache_root
from .manager import resolve_weights


def onnx_for(weights: str, *, offline: bool | None = None, progress: bool = True, quiet: bool = True) -> Path:
    """``weights`` (a model name, .safetensors, .ckpt or .onnx) as an .onnx file.

    Exports are cached under ``<cache>/onnx/<stem>-<sha256[:16]>.onnx``: the same weights are
    exported once. Needs a checkout with the ``export`` extra (onnx, onnxscript).
    """
    path = resolve_weights(weights, offline=offline, progress=progress)
    if path.suffix == ".onnx":
        return path
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    out = cache_root() / "onnx" / f"{path.stem}-{sha256_file(path)[:16]}.onnx"
    if out.is_file():
        return out
    try:
        from export.check import CheckError
        from export.onnx import captured_output, export_onnx
    except ModuleNotFoundError as e:
        raise WeightsError(f"{weights}: exporting it to ONNX needs this checkout's 'export' package and extra "
                           f"(missing module {e.name!r}: pip install -e \".[export]\")") from None
    from ..model.weights import load_generator

    model, meta = load_generator(path)
    try:
        with captured_output(quiet):
            export_onnx(model, out, metadata={"source_weights": Path(weights).name,
                                              "weights_source": meta.get("source", "")})
    except CheckError as e:
        raise WeightsError(f"{path}: the ONNX export failed its checks ({e})") from None
    return out
