"""Settings that travel explicitly into the components that need them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path.home() / ".cache" / "kdsl"


class Settings(BaseSettings):
    """Where kdsl keeps its caches, sessions and models. Read from `KDSL_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="KDSL_", frozen=True)

    home: Path = Field(default_factory=_default_home, description="Root of caches, sessions and models (KDSL_HOME).")

    @property
    def cache_dir(self) -> Path:
        """Feature cache (OCR, visual labels, embeddings), keyed by content hash and tool version."""
        return self.home / "cache"

    @property
    def sessions_dir(self) -> Path:
        return self.home / "sessions"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"
