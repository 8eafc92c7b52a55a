"""The rule memory's error. It belongs in `kdsl/errors.py` with the others; it lives here until it moves."""

from __future__ import annotations

from kdsl.errors import KdslError


class MemoryStoreError(KdslError, RuntimeError):
    """The rule memory cannot be opened, read or written (missing rule, busy lock, unreachable server...)."""
