"""The Engine protocol: every backend turns (image, mask) into an inpainted image.

``engine(image, mask) -> image`` on NCHW float32 numpy arrays: image (N,3,H,W) in [0,1], mask
(N,1,H,W) in {0,1} with 1 = hole. Any H and W are accepted: :class:`BaseEngine` pads to the
model's stride (symmetric, as LaMa), runs the backend, crops back and composites known pixels so
they are bit-exact. Backends implement only ``_run`` on already padded arrays.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import EngineError as EngineError  # re-exported: the engines raise it
from ..pipeline.compose import composite, pad_to_multiple


@runtime_checkable
class Engine(Protocol):
    name: str

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray: ...


RANGE_TOL = 1e-3  # float rounding of values computed in [0, 1]


def value_problem(image: np.ndarray, mask: np.ndarray) -> str | None:
    """What is wrong with the values (not the shapes) of an image/mask pair, or None.

    Images are float in [0, 1]; masks are in [0, 1] with > 0.5 a hole (0/1 in practice). NaN or
    Inf anywhere, or values outside those ranges (an 8-bit image not divided by 255, a mask of 7
    or -3), are refused rather than silently cast, clipped or filled with NaN."""
    for name, x in (("image", image), ("mask", mask)):
        if not np.isfinite(x).all():
            return f"{name} holds NaN or Inf values"
        lo, hi = float(x.min()), float(x.max())
        if lo < -RANGE_TOL or hi > 1 + RANGE_TOL:
            hint = " (divide 8-bit images by 255)" if name == "image" and hi > 1 else " (1 = hole, 0 = keep)"
            return f"{name} values must be in [0, 1], got {lo:g}..{hi:g}{hint}"
    return None


def check_inputs(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image)
    mask = np.asarray(mask)
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be (N,3,H,W), got {image.shape}")
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise ValueError(f"mask must be (N,1,H,W), got {mask.shape}")
    if mask.shape[0] != image.shape[0] or mask.shape[2:] != image.shape[2:]:
        raise ValueError(f"mask {mask.shape} does not match image {image.shape}")
    if image.shape[0] == 0 or image.shape[2] == 0 or image.shape[3] == 0:
        raise ValueError(f"empty input {image.shape}")
    problem = value_problem(image, mask)
    if problem:
        raise ValueError(problem)
    mask = (mask > 0.5).astype(np.float32)
    return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(mask)


class BaseEngine:
    """Shared padding / cropping / compositing; subclasses implement :meth:`_run`."""

    name = "base"
    multiple = 8

    @property
    def min_side(self) -> int:
        """Smallest H or W :meth:`_run` takes: two multiples, since the 1/8-resolution bottleneck
        must be 2 px wide for its reflection padding (1 for engines without a multiple)."""
        return 2 * self.multiple if self.multiple > 1 else 1

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        image, mask = check_inputs(image, mask)
        if not mask.any():
            return image.copy()
        h, w = image.shape[2:]
        pred = self._run(pad_to_multiple(image, self.multiple, min_size=self.min_side),
                         pad_to_multiple(mask, self.multiple, min_size=self.min_side))
        return composite(image, mask, pred[:, :, :h, :w])

    def _run(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Raw generator output for padded inputs (H, W multiples of ``self.multiple``)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (sessions, device buffers, connections)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> dict:
        return {"engine": self.name}
