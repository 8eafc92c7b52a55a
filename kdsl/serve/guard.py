"""What uvicorn leaves open: a client that sends half a request and waits, and more connections than the server
can hold. `server_config(app, limits, ...)` is how `kdsl serve` runs the app, with this guard in place.

uvicorn times a connection out only between requests (`timeout_keep_alive`); a request being read has no limit,
and its `limit_concurrency` answers 503 to new requests (health checks included) once stalled sockets fill it.
The guard is uvicorn's own HTTP protocol with two additions:

- a deadline for reading each request (headers and body): `read_seconds` after its first byte (or after the
  connection opened), it is answered 408 request_timeout and closed;
- a cap on open connections (`max_connections`): a new connection beyond it closes the oldest one that is only
  reading a request or idle between requests, so stalled clients cannot crowd out working ones; when every
  connection is being served, the newcomer gets 503 overloaded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

from kdsl.serve.errors import error_bytes
from kdsl.serve.limits import ServeLimits

logger = logging.getLogger(__name__)


def _raw_response(status: int, reason: str, code: str, message: str) -> bytes:
    body = error_bytes(code, message)
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n")
    return head.encode("ascii") + body


class GuardedHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP protocol (httptools, or h11 without it) with a request read deadline and a connection cap.

    Subclasses set `read_seconds` and `max_connections` (see `guarded_protocol`)."""

    read_seconds: float = 30.0
    max_connections: int = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._opened = time.monotonic()
        self._read_timer: asyncio.TimerHandle | None = None
        self._got_bytes = False

    # State of the request on this connection, from uvicorn's own cycle object (the same in both protocols).
    def _serving(self) -> bool:
        """A request has been read in full and its response is not finished: the app is working on it."""
        cycle = getattr(self, "cycle", None)
        return cycle is not None and not cycle.response_complete and not cycle.more_body

    def _arm(self) -> None:
        if self._read_timer is None:
            self._read_timer = self.loop.call_later(self.read_seconds, self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        self._got_bytes = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections and not self._make_room():
            logger.warning("%d connections open (the limit is %d), all being served: refusing one",
                           len(self.connections) - 1, self.max_connections)
            transport.write(_raw_response(503, "Service Unavailable", "overloaded",
                                          f"the server holds {self.max_connections} connections; retry later"))
            transport.close()
            return
        self._arm()

    def _make_room(self) -> bool:
        """Close the oldest other connection that is reading a request or idle; False when there is none."""
        idle = [c for c in self.connections if c is not self and isinstance(c, GuardedHTTPProtocol)
                and not c._serving() and not c.transport.is_closing()]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c._opened)
        logger.warning("%d connections open (the limit is %d): closing the oldest idle or unfinished one",
                       len(self.connections), self.max_connections)
        oldest._close_unread(503, "Service Unavailable", "overloaded",
                             f"the server holds {self.max_connections} connections and this request was unfinished")
        return True

    def data_received(self, data: bytes) -> None:
        if not self._serving():
            self._arm()
            self._got_bytes = True
        super().data_received(data)
        if self._serving():  # the request is complete: from here request_seconds applies
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self._serving() or self.transport.is_closing():
            return
        logger.info("a request was not received within %g s: closing its connection", self.read_seconds)
        self._close_unread(408, "Request Timeout", "request_timeout",
                           f"the request was not received in full within {self.read_seconds:g} s")

    def _close_unread(self, status: int, reason: str, code: str, message: str) -> None:
        """Close a connection whose request is unfinished, with this error when some of the request came (silently
        when none did: an idle keep-alive connection, or one that never sent a byte)."""
        cycle = getattr(self, "cycle", None)
        started = cycle is not None and cycle.response_started and not cycle.response_complete
        if self._got_bytes and not started:
            self.transport.write(_raw_response(status, reason, code, message))
        self._disarm()
        self.transport.close()


def guarded_protocol(limits: ServeLimits) -> type[GuardedHTTPProtocol]:
    """The protocol class for uvicorn's `http=` setting, with `limits`' read deadline and connection cap."""
    return type("GuardedHTTPProtocol", (GuardedHTTPProtocol,),
                {"read_seconds": limits.read_seconds, "max_connections": limits.max_connections})


def server_config(app: Any, limits: ServeLimits, *, host: str, port: int, log_level: str = "info") -> Any:
    """The uvicorn configuration `kdsl serve` runs: one worker, the guard, and `limits.keep_alive_seconds`."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, workers=1, http=guarded_protocol(limits),
                          timeout_keep_alive=limits.keep_alive_seconds)
