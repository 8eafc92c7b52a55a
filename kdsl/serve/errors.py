"""Where exceptions become JSON errors `{"error": {"code", "message", "item"}}`; never a traceback in a response."""

from __future__ import annotations

import json
import logging
from typing import Any

from kdsl.errors import KdslError

logger = logging.getLogger(__name__)

# Pydantic error types that have a more precise code than invalid_request, by the field they concern.
_FIELD_CODES = {("turns", "too_short"): "empty_turns", ("samples", "too_short"): "empty_batch"}


class ApiError(KdslError):
    """An error the API reports as it is: HTTP status, stable code, message, and the offending item."""

    def __init__(self, status: int, code: str, message: str, *, item: int | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.item = item
        self.headers = headers or {}


def error_body(code: str, message: str, item: int | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "item": item}}


def error_bytes(code: str, message: str, item: int | None = None) -> bytes:
    return json.dumps(error_body(code, message, item), ensure_ascii=False).encode("utf-8")


def _where(loc: tuple[Any, ...]) -> tuple[int | None, str]:
    """(item index, readable field path) of a validation error location like ('body', 'samples', 2, 'turns', 0)."""
    parts = [p for p in loc if p != "body"]
    item = None
    if len(parts) >= 2 and parts[0] == "samples" and isinstance(parts[1], int):
        item, parts = parts[1], parts[2:]
    path = ""
    for p in parts:
        path += f"[{p}]" if isinstance(p, int) else (f".{p}" if path else str(p))
    return item, path


def validation_error(errors: list[dict[str, Any]]) -> ApiError:
    """The first pydantic/FastAPI validation error as an ApiError (400 invalid_json, else 422)."""
    if not errors:
        return ApiError(422, "invalid_request", "the request body is not valid")
    first = errors[0]
    loc = tuple(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        return ApiError(400, "invalid_json", f"the body is not valid JSON ({first.get('msg', '')})")
    item, path = _where(loc)
    field = next((p for p in reversed(loc) if isinstance(p, str)), "")
    code = _FIELD_CODES.get((field, first.get("type", "")), "invalid_request")
    if first.get("type") == "missing" and not path:
        path = "body"
    message = f"{path}: {first.get('msg', 'invalid')}" if path else str(first.get("msg", "invalid"))
    more = len(errors) - 1
    if more:
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    return ApiError(422, code, message, item=item)


HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large",
              415: "unsupported_media_type"}
