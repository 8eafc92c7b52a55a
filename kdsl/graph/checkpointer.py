"""Where a session's LangGraph checkpoints live: a SQLite file in the session folder (the default), or a PostgreSQL
database that many sessions on many machines share (`kdsl discover --checkpointer postgresql://...`).

A PostgreSQL URL is kept in config.json without its password, so a resume reaches the same database; libpq then
reads the password from PGPASSWORD or ~/.pgpass, as every PostgreSQL client does.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from kdsl.errors import ConfigError

POSTGRES_SCHEMES = ("postgresql", "postgres")


def check_checkpointer_url(url: str) -> str:
    """A PostgreSQL URL as given, or a `ConfigError` saying what is wrong with it."""
    parts = urlsplit(url)
    if parts.scheme not in POSTGRES_SCHEMES:
        raise ConfigError(f"checkpointer {redact(url)!r}: give a PostgreSQL URL (postgresql://USER@HOST:PORT/DB); "
                          "leave it out for a SQLite file in the session folder")
    return url


def redact(url: str) -> str:
    """The URL without its password (what config.json and messages show)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc}" if user else netloc))


def check_reachable(url: str) -> None:
    """Connect once and close, so a wrong URL or password fails before a session folder is made."""
    with open_checkpointer(url, Path("unused")):
        pass


@contextmanager
def open_checkpointer(url: str | None, sqlite_path: Path) -> Iterator[Any]:
    """A checkpointer, closed on exit: SQLite at `sqlite_path` when `url` is None, else PostgreSQL at `url`
    (its tables created on first use)."""
    if url is None:
        from langgraph.checkpoint.sqlite import SqliteSaver

        conn = sqlite3.connect(str(sqlite_path), check_same_thread=False)
        try:
            yield SqliteSaver(conn)
        finally:
            conn.close()
        return
    import psycopg
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg.rows import dict_row

    check_checkpointer_url(url)
    try:
        # The settings PostgresSaver's own from_conn_string uses: autocommit, dict rows, no server-side prepares
        # (they break behind pgbouncer-style poolers).
        conn = psycopg.connect(url, autocommit=True, prepare_threshold=0, row_factory=dict_row, connect_timeout=10)
    except psycopg.Error as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"checkpointer {redact(url)}: cannot connect ({reason})") from e
    try:
        saver = PostgresSaver(conn)
        saver.setup()  # idempotent: creates or migrates LangGraph's tables
        yield saver
    finally:
        conn.close()
