"""What one request may ask of the server. Read from `KDSL_SERVE_*` environment variables, or given explicitly."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1 << 20


class ServeLimits(BaseSettings):
    """Bounds on request size, images and time; each one turns into a JSON 4xx (or 504) when exceeded."""

    model_config = SettingsConfigDict(env_prefix="KDSL_SERVE_", frozen=True)

    max_body_bytes: int = Field(32 * MIB, ge=1024, description="Largest request body (bytes) -> 413 body_too_large.")
    max_samples: int = Field(64, ge=1, description="Samples per request -> 413 too_many_samples.")
    max_turns: int = Field(200, ge=1, description="Turns per sample -> 413 too_many_turns.")
    max_text_chars: int = Field(20_000, ge=1, description="Characters of one turn -> 413 text_too_long.")
    max_images: int = Field(8, ge=0, description="Images per sample -> 413 too_many_images.")
    max_image_bytes: int = Field(8 * MIB, ge=1, description="Bytes of one decoded image -> 413 image_too_large.")
    max_image_pixels: int = Field(40_000_000, ge=1, description="Width x height of one image -> 413 "
                                                                 "image_too_large (a decompression bomb never "
                                                                 "gets decoded).")
    request_seconds: float = Field(120.0, gt=0, description="Time a request may wait and run -> 504 timeout.")
    max_queued_samples: int = Field(256, ge=1, description="Samples waiting for the model -> 503 overloaded.")
    max_batch_samples: int = Field(4, ge=1, description="Samples of concurrent requests the model worker takes "
                                                         "together (one request is never split). The decider scores "
                                                         "sample by sample, so a batch amortizes features, rules "
                                                         "and arbiter only, while each request in it waits for all.")
    read_seconds: float = Field(30.0, gt=0, description="Time to receive a whole request (headers and body) from its "
                                                     "first byte -> 408 request_timeout and the connection closed.")
    keep_alive_seconds: int = Field(5, ge=1, description="Time an idle connection stays open between requests.")
    max_connections: int = Field(1000, ge=1, description="Open connections; one more closes the oldest idle or "
                                                         "unfinished one (503 overloaded when all are served).")
    tmp_dir: Path | None = Field(None, description="Where decoded images are written while a request runs "
                                                  "(default: the system's temporary folder).")
