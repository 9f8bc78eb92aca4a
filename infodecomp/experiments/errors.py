"""The run machinery's user errors: each message says what is wrong and what to do, so the Hydra
shim (experiments.shim) prints it as one line without a traceback. Pure Python: no torch, no
Hydra, so every module of the layer can import it (and none needs another to raise one)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config key or value the schema does not accept (one line naming the key and the fix)."""


class RunError(RuntimeError):
    """A run stopped for a reason shared by every item (one line, naming the cause)."""
