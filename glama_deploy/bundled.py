"""Files shipped inside the package: the one place that names the default model."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_WEIGHTS = ASSETS / "glama-small.safetensors"
SAMPLES = ASSETS / "samples"
