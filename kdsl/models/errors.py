"""Model-layer errors. `ModelError` is meant to move into `kdsl/errors.py`; import it from `kdsl.models`."""

from __future__ import annotations

from kdsl.errors import KdslError


class ModelError(KdslError, RuntimeError):
    """A model pack or backend cannot be fetched, verified, converted or loaded. The message says what to do."""
