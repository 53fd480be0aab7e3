"""The package's error types, in a module that imports nothing heavy.

The CLI catches them before torch or onnxruntime is imported, so a bad argument is reported in a
fraction of a second. Every message is one line that names the file or option and the problem.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input (a file, an option); the message is one line and names it. CLI exit code 2."""


class WeightsError(ValueError):
    """A weights file that cannot be used; the message names the file and the problem. Exit code 2."""


class EngineError(RuntimeError):
    """The backend cannot run (missing package, no device, server down...). Exit code 1."""
