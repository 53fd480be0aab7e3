"""Classical (non-learned) inpainting baselines behind the Engine protocol, for evaluation tables.

A learned model that does not beat OpenCV's diffusion inpainting on a mask type has not learned that
type; ``python -m training.evaluate --baseline telea`` puts the number beside the model's.
"""

from __future__ import annotations

import cv2
import numpy as np

from glama_deploy.engines.base import BaseEngine

BASELINES = ("telea", "ns", "pyramid")


def baseline_engine(method: str) -> BaseEngine:
    """``telea`` / ``ns`` (OpenCV) or ``pyramid`` (the generators' prefill alone, no network)."""
    return PyramidFillEngine() if method == "pyramid" else OpenCVInpaintEngine(method)


class PyramidFillEngine(BaseEngine):
    """The normalized-convolution pyramid fill that ``prefill`` generators start from, alone: the
    floor a prefill model starts at (its correction is what training adds)."""

    multiple = 1
    name = "pyramid-fill"
    radius = 0

    def _run(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import torch

        from glama_deploy.model.prefill import pyramid_fill

        with torch.no_grad():
            x, m = torch.from_numpy(image), torch.from_numpy(mask)
            return pyramid_fill(x, 1 - m).numpy()


class OpenCVInpaintEngine(BaseEngine):
    """``cv2.inpaint`` (Telea's fast marching, or Navier-Stokes) per image on 8-bit RGB, radius 5.

    Known pixels are pasted back by :class:`BaseEngine`, as for the networks, so metrics compare
    the same composites.
    """

    multiple = 1  # no padding: a classical method works at any size

    def __init__(self, method: str = "telea", radius: int = 5) -> None:
        if method not in ("telea", "ns"):
            raise ValueError(f"unknown baseline {method!r}; known: {', '.join(BASELINES)}")
        self.flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
        self.radius = int(radius)
        self.name = f"opencv-{method}"

    def _run(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        out = np.empty_like(image)
        for i in range(image.shape[0]):
            rgb = np.clip(np.rint(image[i].transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)
            hole = (mask[i, 0] > 0.5).astype(np.uint8)
            filled = cv2.inpaint(rgb, hole, self.radius, self.flag)
            out[i] = filled.transpose(2, 0, 1).astype(np.float32) / 255.0
        return out

    def describe(self) -> dict:
        return {"engine": self.name, "radius": self.radius}
