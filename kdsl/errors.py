"""kdsl's exceptions. Each subclass also inherits the builtin a caller would naturally catch."""

from __future__ import annotations


class KdslError(Exception):
    """Root of every error kdsl raises on purpose; the CLI prints these as one line."""


class DataError(KdslError, ValueError):
    """Input data is unreadable or inconsistent. The message names the file, the sample and the reason."""

    def __init__(self, reason: str, *, path: str | None = None, sample_id: str | None = None, code: str = "invalid",
                 skippable: bool = False):
        self.reason = reason
        self.path = path
        self.sample_id = sample_id
        self.code = code
        self.skippable = skippable  # one bad item a loader could skip (`--skip-invalid`) and go on
        where = []
        if path:
            where.append(str(path))
        if sample_id:
            where.append(f"sample {sample_id!r}")
        prefix = ": ".join(where)
        super().__init__(f"{prefix}: {reason}" if prefix else reason)


class RuleSyntaxError(KdslError, ValueError):
    """A rule or condition does not follow the rule language (bad field, empty terms, invalid regex...)."""


class FeatureError(KdslError, RuntimeError):
    """A feature tool (OCR, visual labels, embeddings) failed on an input."""


class ConfigError(KdslError, ValueError):
    """A setting has a value kdsl cannot use."""


class MemoryStoreError(KdslError, RuntimeError):
    """The rule memory cannot be opened, read or written (missing rule, busy lock, unreachable server...)."""


class ModelError(KdslError, RuntimeError):
    """A model pack or backend cannot be fetched, verified, converted or loaded. The message says what to do."""
