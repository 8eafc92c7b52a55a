"""Atomic file writes: a temporary file beside the target, then a rename, so a kill never leaves half a file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_text_atomic(path: Path, text: str) -> Path:
    """Write `text` (UTF-8) to a temporary file beside `path`, then rename it over `path`; returns `path`.

    The temporary name carries the process id, so two processes writing one file never share a half-written
    temporary; a failed write leaves no temporary behind.
    """
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        if e.filename is None:  # a failed write() names no file (a full disk): name the one being written
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json_atomic(path: Path, data: Any) -> Path:
    """Write `data` as JSON atomically (non-ASCII kept, indent 1, other objects as their `str`); returns `path`."""
    return write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=1, default=str))
