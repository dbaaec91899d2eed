"""Transport URLs: choosing a transport, redacting secrets, key names."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentbus import Keys, MemoryTransport, UsageError, open_transport
from agentbus.keys import validate_topic
from agentbus.transports import redact_url, resolve_url


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("redis://user:hunter2@localhost:6379/0", "hunter2"),
        ("redis://:hunter2@localhost:6379/0", "hunter2"),
        ("redis://hunter2@localhost:6379/0", "hunter2"),
        ("rediss://default:hunter2@cache.example.com:6380/1", "hunter2"),
        ("redis://user:p%40ss%3Aword@host/0", "p%40ss%3Aword"),
        ("redis://user:p@ss@host/0", "p@ss"),
        ("redis://localhost:6379/0?password=hunter2", "hunter2"),
        ("unix:///run/redis.sock?db=2&password=hunter2", "hunter2"),
        ("redis://localhost/0?Password=hunter2&token=tok123", "tok123"),
        ("memory://?journal=/tmp/j.sqlite3&secret=hunter2", "hunter2"),
    ],
)
def test_redact_url_removes_passwords(url: str, secret: str) -> None:
    redacted = redact_url(url)

    assert secret not in redacted
    assert "hunter2" not in redacted
    assert "***" in redacted


def test_redact_url_keeps_the_rest() -> None:
    assert redact_url("redis://localhost:6379/0") == "redis://localhost:6379/0"
    assert redact_url("redis://user:pw@host:1/2") == "redis://user:***@host:1/2"
    assert redact_url("redis://pw@host:1/2") == "redis://***@host:1/2"
    assert redact_url("redis://host/0?prefix=app%3A") == "redis://host/0?prefix=app%3A"
    assert redact_url("memory://") == "memory://"


@given(
    password=st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=30),
    user=st.sampled_from(["", "default", "app"]),
    scheme=st.sampled_from(["redis", "rediss"]),
)
def test_redact_url_never_leaves_the_password(password: str, user: str, scheme: str) -> None:
    marker = "Zq9" + password  # no chance of matching the host or the scheme by accident
    encoded = quote(marker, safe="")
    url = f"{scheme}://{user}:{encoded}@db.internal:6379/0"

    redacted = redact_url(url)

    assert encoded not in redacted
    assert marker not in redacted
    assert redact_url(f"{scheme}://db.internal:6379/0?password={encoded}").count("Zq9") == 0


@pytest.mark.parametrize("url", ["http://localhost", "kafka://broker:9092", "nats://x"])
def test_open_transport_rejects_unknown_schemes(url: str) -> None:
    with pytest.raises(UsageError) as info:
        open_transport(url)
    assert repr(url) in str(info.value)
    assert "redis://" in str(info.value)


def test_open_transport_error_hides_the_password() -> None:
    with pytest.raises(UsageError) as info:
        open_transport("amqp://user:hunter2@broker/")
    assert "hunter2" not in str(info.value)


async def test_open_transport_picks_by_scheme(tmp_path: object) -> None:
    memory = open_transport("memory://?journal=")
    assert isinstance(memory, MemoryTransport)
    await memory.aclose()

    from agentbus.transports.redis import RedisStreamsTransport

    # Built, not connected: no network needed.
    for url in ("redis://u:pw@127.0.0.1:1/0?prefix=app:", "rediss://127.0.0.1:1/0"):
        redis = open_transport(url)
        assert isinstance(redis, RedisStreamsTransport)
        assert "pw" not in redis.url
        await redis.aclose()
    prefixed = open_transport("redis://127.0.0.1:1/0?prefix=app:")
    assert isinstance(prefixed, RedisStreamsTransport)
    assert prefixed.keys.prefix == "app:"
    await prefixed.aclose()


def test_resolve_url_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTBUS_URL", raising=False)
    assert resolve_url() == "memory://"
    monkeypatch.setenv("AGENTBUS_URL", "redis://from-env:6379/0")
    assert resolve_url() == "redis://from-env:6379/0"
    assert resolve_url("memory://?journal=") == "memory://?journal="


def test_keys_live_under_the_prefix() -> None:
    keys = Keys("app:")
    names = [
        keys.topic("orders"),
        keys.dead_letters("orders"),
        keys.journal("r1"),
        keys.run("r1"),
        keys.runs(),
        keys.dedup("agent", "e1"),
    ]
    assert all(n.startswith("app:") for n in names)
    assert len(set(names)) == len(names)
    assert keys.topic_name(keys.topic("a:b")) == "a:b"
    assert Keys().prefix == "agentbus:"


@pytest.mark.parametrize("prefix", ["", "has space:"])
def test_keys_reject_bad_prefixes(prefix: str) -> None:
    with pytest.raises(UsageError, match=repr(prefix)):
        Keys(prefix)


def test_validate_topic() -> None:
    assert validate_topic("a.b-c_d:e") == "a.b-c_d:e"
    for bad in ("", "a b", "a*"):
        with pytest.raises(UsageError):
            validate_topic(bad)
