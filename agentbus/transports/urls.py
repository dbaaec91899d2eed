"""Transport URLs: redaction of secrets (see :mod:`agentbus.redact`) and Redis URL forms.

:func:`parse_redis_url` reads the Redis URL forms agentbus accepts (it never imports
redis-py; :mod:`.redis_client` builds the clients from what it returns)::

    redis://[user:pw@]HOST:PORT/DB         one Redis (rediss:// with TLS, unix:///path)
    redis+cluster://[user:pw@]H1:P1,H2:P2/ Redis Cluster; every host is a seed node
    redis+sentinel://[user:pw@]S1:P1,S2:P2/SERVICE[/DB]
                                           the primary Sentinel names SERVICE
    rediss+cluster://, rediss+sentinel://  the same over TLS (same ssl_* options)

Options agentbus itself reads (removed before redis-py sees the URL): ``prefix`` (key
prefix), ``wait`` (replicas that must acknowledge each write, 0: off) and
``wait_timeout`` (ms, default 1000), ``sentinel_username``/``sentinel_password`` (for
the sentinels themselves; the user and password in the URL are the data nodes').
Every other query option is a redis-py connection option (``socket_timeout``,
``max_connections``, ``ssl_ca_certs``, ...); the client checks the names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlencode

from ..errors import UsageError
from ..redact import redact_url

__all__ = ["RedisURL", "parse_redis_url", "redact_url"]

#: scheme -> (kind, TLS)
REDIS_SCHEMES: dict[str, tuple[str, bool]] = {
    "redis": ("redis", False),
    "rediss": ("redis", True),
    "unix": ("redis", False),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
}
_DEFAULT_PORT = {"redis": 6379, "cluster": 6379, "sentinel": 26379}
#: Options agentbus reads itself; never passed to redis-py.
_OWN_OPTIONS = ("prefix", "wait", "wait_timeout", "sentinel_username", "sentinel_password")
_DEFAULT_WAIT_TIMEOUT_MS = 1000


@dataclass(frozen=True, slots=True)
class RedisURL:
    """A parsed Redis URL (see the module doc)."""

    kind: str  # "redis" | "cluster" | "sentinel"
    tls: bool
    #: For kind "redis": the URL for redis-py's ``from_url`` (agentbus's options removed).
    url: str
    hosts: tuple[tuple[str, int], ...] = ()
    username: str | None = None
    password: str | None = None
    db: int = 0
    service: str | None = None
    #: redis-py connection options from the query, as strings (kinds cluster/sentinel).
    options: dict[str, str] = field(default_factory=dict)
    prefix: str | None = None
    wait: int = 0
    wait_timeout_ms: int = _DEFAULT_WAIT_TIMEOUT_MS
    sentinel_username: str | None = None
    sentinel_password: str | None = None


def parse_redis_url(url: str) -> RedisURL:
    """Read a Redis URL of any supported form; raise :class:`UsageError` naming what is wrong."""
    shown = redact_url(url)
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in REDIS_SCHEMES:
        raise UsageError(f"not a Redis URL: {shown!r}")
    kind, tls = REDIS_SCHEMES[scheme.lower()]
    # Everything before the last '@' is userinfo (a raw '@' in a password stays in it).
    info, at, after = rest.rpartition("@")
    if not at:
        info, after = "", rest
    cut = re.search(r"[/?#]", after)
    netloc, tail = (after, "") if cut is None else (after[: cut.start()], after[cut.start() :])
    path, _, query_text = tail.partition("?")
    query_text = query_text.partition("#")[0]
    query = dict(parse_qsl(query_text, keep_blank_values=True))
    own = {name: query.pop(name) for name in _OWN_OPTIONS if name in query}
    for flag in ("cluster", "sentinel"):
        if flag in query:
            raise UsageError(
                f"?{flag}= is not an option of {shown!r}: use redis+{flag}://"
                + ("HOST:PORT,HOST:PORT/" if flag == "cluster" else "HOST:PORT,.../SERVICE")
            )
    wait, wait_timeout = _wait_options(own, shown)
    if kind == "redis":
        if "," in netloc:
            raise UsageError(
                f"a multi-host URL needs redis+cluster:// or redis+sentinel://, got {shown!r}"
            )
        if own.keys() & {"sentinel_username", "sentinel_password"}:
            raise UsageError(f"sentinel_* options need a redis+sentinel:// URL, got {shown!r}")
        clean = scheme + "://" + (info + "@" if at else "") + netloc + path.partition("#")[0]
        if query:
            clean += "?" + urlencode(query)
        return RedisURL(
            kind, tls, clean, prefix=own.get("prefix"), wait=wait, wait_timeout_ms=wait_timeout
        )
    hosts = tuple(_host(h, _DEFAULT_PORT[kind], shown) for h in netloc.split(","))
    user, colon, password = info.partition(":")
    db, service = _path(kind, path, query.pop("db", None), shown)
    if kind != "sentinel" and own.keys() & {"sentinel_username", "sentinel_password"}:
        raise UsageError(f"sentinel_* options need a redis+sentinel:// URL, got {shown!r}")
    return RedisURL(
        kind,
        tls,
        url,
        hosts=hosts,
        username=unquote(user) or None,
        password=unquote(password) if colon else None,
        db=db,
        service=service,
        options=query,
        prefix=own.get("prefix"),
        wait=wait,
        wait_timeout_ms=wait_timeout,
        sentinel_username=own.get("sentinel_username"),
        sentinel_password=own.get("sentinel_password"),
    )


def _wait_options(own: dict[str, str], shown: str) -> tuple[int, int]:
    wait = _int_option(own, "wait", 0, shown)
    timeout = _int_option(own, "wait_timeout", _DEFAULT_WAIT_TIMEOUT_MS, shown)
    if wait < 0 or timeout < 1:
        raise UsageError(
            f"?wait= takes a number of replicas (1 or more; 0 is off) and ?wait_timeout= a "
            f"time in ms (1 or more), got {shown!r}"
        )
    return wait, timeout


def _int_option(own: dict[str, str], name: str, default: int, shown: str) -> int:
    value = own.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"?{name}= must be a whole number, got {value!r} in {shown!r}") from None


def _host(text: str, default_port: int, shown: str) -> tuple[str, int]:
    if not text:
        raise UsageError(f"empty host in {shown!r}: list hosts as HOST:PORT,HOST:PORT")
    if text.startswith("["):  # [IPv6]:port
        host, _, port = text[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not port:
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"port {port!r} of host {host!r} is not a port number in {shown!r}")
    return host, int(port)


def _path(kind: str, path: str, db_option: str | None, shown: str) -> tuple[int, str | None]:
    parts = [unquote(p) for p in path.strip("/").split("/") if p]
    service = None
    if kind == "sentinel":
        if not parts:
            raise UsageError(
                f"a Sentinel URL names the primary's service: "
                f"redis+sentinel://HOST:PORT,HOST:PORT/SERVICE[/DB], got {shown!r}"
            )
        service, parts = parts[0], parts[1:]
    if len(parts) > 1:
        raise UsageError(f"unexpected path {path!r} in {shown!r}")
    db_text = db_option if db_option is not None else (parts[0] if parts else "0")
    if not db_text.isdigit():
        raise UsageError(f"the database must be a number, got {db_text!r} in {shown!r}")
    db = int(db_text)
    if kind == "cluster" and db != 0:
        raise UsageError(f"Redis Cluster has only database 0; drop /{db} from {shown!r}")
    return db, service
