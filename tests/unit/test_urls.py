"""Transport URLs: choosing a transport, redacting secrets, key names."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentbus import Keys, MemoryTransport, UsageError, open_transport
from agentbus.keys import validate_topic
from agentbus.transports import redact_url, resolve_url
from agentbus.transports.urls import parse_redis_url


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
        keys.runs(0),
        keys.dedup("orders", "agent", "e1"),
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


# -- Redis URL forms --------------------------------------------------------------------------
def test_cluster_url_lists_every_seed_node() -> None:
    url = parse_redis_url(
        "rediss+cluster://app:p%40ss@10.0.0.1:7001,10.0.0.2,[::1]:7003/?prefix=x:"
        "&ssl_ca_certs=/ca.pem&max_connections=20&wait=1&wait_timeout=250"
    )
    assert (url.kind, url.tls, url.db, url.service) == ("cluster", True, 0, None)
    assert url.hosts == (("10.0.0.1", 7001), ("10.0.0.2", 6379), ("::1", 7003))
    assert (url.username, url.password) == ("app", "p@ss")
    assert url.options == {"ssl_ca_certs": "/ca.pem", "max_connections": "20"}
    assert (url.prefix, url.wait, url.wait_timeout_ms) == ("x:", 1, 250)


def test_sentinel_url_names_the_service_and_db() -> None:
    url = parse_redis_url(
        "redis+sentinel://:pw@s1:26380,s2/mymaster/3?sentinel_password=spw&socket_timeout=2"
    )
    assert (url.kind, url.tls, url.service, url.db) == ("sentinel", False, "mymaster", 3)
    assert url.hosts == (("s1", 26380), ("s2", 26379))
    assert (url.username, url.password, url.sentinel_password) == (None, "pw", "spw")
    assert url.options == {"socket_timeout": "2"}
    assert parse_redis_url("rediss+sentinel://s1/m").tls


def test_plain_url_passes_on_without_agentbus_options() -> None:
    url = parse_redis_url("redis://u:pw@h:1/2?prefix=a:&wait=2&socket_timeout=3")
    assert (url.kind, url.prefix, url.wait, url.wait_timeout_ms) == ("redis", "a:", 2, 1000)
    assert url.url == "redis://u:pw@h:1/2?socket_timeout=3"
    assert parse_redis_url("unix:///run/redis.sock?db=2").url == "unix:///run/redis.sock?db=2"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://h1:1,h2:2/0", "a multi-host URL needs redis+cluster:// or redis+sentinel://"),
        ("rediss://h1:1,h2:2/0", "a multi-host URL needs redis+cluster://"),
        ("redis://h:1/0?cluster=true", "use redis+cluster://"),
        ("redis://h:1/0?sentinel=yes", "use redis+sentinel://"),
        ("redis+cluster://h:1,h:2/1", "Redis Cluster has only database 0"),
        ("redis+cluster://h:1/?db=2", "Redis Cluster has only database 0"),
        ("redis+cluster://h:1,h:x/", "port 'x' of host 'h' is not a port number"),
        ("redis+cluster://h:1,h:99999/", "is not a port number"),
        ("redis+cluster://h:1,,h:2/", "empty host"),
        ("redis+sentinel://s:1,s:2", "names the primary's service"),
        ("redis+sentinel://s:1/m/x", "the database must be a number"),
        ("redis+cluster://h:1/?sentinel_password=x", "need a redis+sentinel:// URL"),
        ("redis://h:1/0?wait=x", "?wait= must be a whole number"),
        ("redis://h:1/0?wait=-1", "?wait= takes a number of replicas"),
        ("redis://h:1/0?wait=1&wait_timeout=0", "?wait_timeout="),
        ("redis://h:1/0?bogus=1", "unknown option 'bogus'"),
        ("redis+cluster://h:1/?bogus=1", "unknown option 'bogus'"),
        ("redis+sentinel://s:1/m?max_connections=x", "bad value 'x' for 'max_connections'"),
    ],
)
def test_bad_redis_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        open_transport(url.replace("h:1", "127.0.0.1:1").replace("h1:1", "127.0.0.1:1"))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


async def test_open_transport_builds_cluster_and_sentinel_clients() -> None:
    from agentbus.transports.redis import RedisStreamsTransport

    for url, kind in [
        ("redis+cluster://u:pw@127.0.0.1:1,127.0.0.1:2/?prefix=c:", "cluster"),
        ("rediss+cluster://127.0.0.1:1/?ssl_check_hostname=false", "cluster"),
        ("redis+sentinel://u:pw@127.0.0.1:1,127.0.0.1:2/svc/1?sentinel_password=s", "sentinel"),
        ("redis://127.0.0.1:1/0?wait=1", "redis"),
    ]:
        transport = open_transport(url)  # built, not connected: no network needed
        assert isinstance(transport, RedisStreamsTransport)
        client = transport._c
        assert (client.kind, client.cluster) == (kind, kind == "cluster")
        assert client.r is not client.blocking
        assert "pw" not in transport.url
        await transport.aclose()


def test_unsupported_url_lists_the_cluster_and_sentinel_forms() -> None:
    with pytest.raises(UsageError) as info:
        open_transport("redis-cluster://h:1/")
    assert "redis+cluster://" in str(info.value)
    assert "redis+sentinel://" in str(info.value)


@pytest.mark.parametrize(
    "template",
    [
        "redis+cluster://app:{pw}@h1:7001,h2:7002/",
        "rediss+cluster://:{pw}@h1:7001,h2:7002/?prefix=x",
        "redis+sentinel://app:{pw}@s1:26379,s2:26379/mymaster/0",
        "rediss+sentinel://{pw}@s1:26379,s2:26379/mymaster",
        "redis+sentinel://s1:26379,s2:26379/mymaster?sentinel_password={pw}",
    ],
)
@given(password=st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=30))
def test_redact_url_hides_passwords_of_multi_host_urls(template: str, password: str) -> None:
    encoded = quote("Zq9" + password, safe="")
    redacted = redact_url(template.format(pw=encoded))
    assert encoded not in redacted
    assert "Zq9" not in redacted
    assert "h1:7001,h2:7002" in redacted or "s1:26379,s2:26379" in redacted
