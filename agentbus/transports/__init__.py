"""Transports: where topics, consumer groups and journals live.

``open_transport(url)`` picks one by URL scheme: ``memory://`` (embedded, the default),
``redis://``, ``rediss://`` (TLS) and ``unix://`` (Redis over a Unix socket),
``redis+cluster://`` (Redis Cluster) and ``redis+sentinel://`` (a primary found through
Sentinel), both also over TLS (``rediss+...``; see :mod:`agentbus.transports.urls`). The
contract they implement (``Broker``, ``JournalStore``, ``Admin``, composed as
``Transport``) is in :mod:`agentbus.transports.contract`.

``open_archive(url)`` opens a journal archive, where finished runs are moved to outlive
the hot store: ``postgresql://`` (:mod:`agentbus.transports.postgres_archive`, with the
``postgres`` extra installed).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..errors import UsageError
from .base import (
    Ack,
    DeadConsumer,
    DeadLetter,
    Delivery,
    EntryState,
    GroupInfo,
    JournalEntry,
    JournalRecord,
    Question,
    Reservation,
    RunInfo,
    TopicInfo,
)
from .contract import Admin, Broker, JournalArchive, JournalStore, Transport
from .memory import MemoryTransport
from .urls import REDIS_SCHEMES, redact_url

__all__ = [
    "DEFAULT_JOURNAL_PATH",
    "Ack",
    "Admin",
    "Broker",
    "DeadConsumer",
    "DeadLetter",
    "Delivery",
    "EntryState",
    "GroupInfo",
    "JournalArchive",
    "JournalEntry",
    "JournalRecord",
    "JournalStore",
    "MemoryTransport",
    "Question",
    "Reservation",
    "RunInfo",
    "TopicInfo",
    "Transport",
    "open_archive",
    "open_transport",
    "redact_url",
    "resolve_journal_url",
    "resolve_url",
]

DEFAULT_URL = "memory://"
DEFAULT_JOURNAL_PATH = Path(".agentbus") / "journal.sqlite3"


def resolve_url(url: str | None = None) -> str:
    """``url``, else ``$AGENTBUS_URL``, else the embedded default ``memory://``."""
    return url or os.environ.get("AGENTBUS_URL") or DEFAULT_URL


def open_transport(url: str | None = None, **options: Any) -> Transport:
    """Build (not connect) the transport for ``url`` (see :func:`resolve_url`).

    Raises :class:`UsageError` for an unsupported scheme.
    """
    url = resolve_url(url)
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
        journal = query.get("journal", str(DEFAULT_JOURNAL_PATH))
        return MemoryTransport(journal_path=journal or None, url=url, **options)
    if scheme.lower() in REDIS_SCHEMES:
        # Imported here so that the embedded default never loads redis-py.
        from .redis import RedisStreamsTransport

        return RedisStreamsTransport(url, **options)
    raise UsageError(
        f"unsupported transport URL {redact_url(url)!r}: use memory://, redis://HOST:PORT/DB, "
        "rediss://HOST:PORT/DB (TLS), unix:///path/to/redis.sock, "
        "redis+cluster://HOST:PORT,HOST:PORT/ (Redis Cluster) or "
        "redis+sentinel://HOST:PORT,HOST:PORT/SERVICE (Sentinel); rediss+cluster:// and "
        "rediss+sentinel:// for TLS"
    )


#: URL schemes of journal archives.
ARCHIVE_SCHEMES = frozenset({"postgresql", "postgres"})


def resolve_journal_url(url: str | None = None) -> str | None:
    """``url``, else ``$AGENTBUS_JOURNAL_URL``, else ``None`` (no archive: the hot store
    holds every run)."""
    return url or os.environ.get("AGENTBUS_JOURNAL_URL") or None


def open_archive(url: str) -> JournalArchive:
    """Build (not connect) the journal archive at ``url``.

    Raises :class:`UsageError` for an unsupported scheme, or when the driver (the
    ``postgres`` extra) is not installed.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ARCHIVE_SCHEMES:
        raise UsageError(
            f"unsupported journal URL {redact_url(url)!r}: use "
            "postgresql://USER:PASSWORD@HOST:PORT/DATABASE[?schema=NAME]"
        )
    try:
        # Imported here: asyncpg is an optional extra, and only archives need it.
        from .postgres_archive import PostgresArchive
    except ModuleNotFoundError as exc:
        if exc.name != "asyncpg":
            raise
        raise UsageError(
            "a postgresql:// journal needs the asyncpg driver: "
            "pip install 'agentbus-streams[postgres]'"
        ) from exc
    return PostgresArchive(url)
