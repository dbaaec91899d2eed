"""Transports: where topics, consumer groups and journals live.

``open_transport(url)`` picks one by URL scheme: ``memory://`` (embedded, the default),
``redis://``, ``rediss://`` (TLS) and ``unix://`` (Redis over a Unix socket). The
contract they implement (``Broker``, ``JournalStore``, ``Admin``, composed as
``Transport``) is in :mod:`agentbus.transports.contract`.
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
    RunInfo,
    TopicInfo,
)
from .contract import Admin, Broker, JournalStore, Transport
from .memory import MemoryTransport
from .urls import redact_url

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
    "JournalEntry",
    "JournalRecord",
    "JournalStore",
    "MemoryTransport",
    "RunInfo",
    "TopicInfo",
    "Transport",
    "open_transport",
    "redact_url",
    "resolve_url",
]

DEFAULT_URL = "memory://"
DEFAULT_JOURNAL_PATH = Path(".agentbus") / "journal.sqlite3"
_REDIS_SCHEMES = ("redis", "rediss", "unix")


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
    if scheme in _REDIS_SCHEMES:
        # Imported here so that the embedded default never loads redis-py.
        from .redis import RedisStreamsTransport

        return RedisStreamsTransport(url, **options)
    raise UsageError(
        f"unsupported transport URL {redact_url(url)!r}: use memory://, redis://HOST:PORT/DB, "
        "rediss://HOST:PORT/DB (TLS) or unix:///path/to/redis.sock"
    )
