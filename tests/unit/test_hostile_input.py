"""Hostile input (property-based): whatever lands in a topic, the runtime stays up and
dead-letters what it cannot handle with the precise reason.

Garbage entries, arbitrary bytes, invalid UTF-8 or JSON, lone surrogate escapes,
numbers too long to convert, nesting past the parser's depth limit, non-objects,
missing or mistyped CloudEvents attributes, extra attributes, unknown types, invalid
payloads and oversized events are injected raw into a topic, followed by one valid
event. Each bad entry must end in the dead-letter stream with the reason an
independent oracle predicts, and the valid one must be handled. The Redis variant
(tests/integration/test_hostile_input_redis.py) reuses this scenario, and the Redis
fuzz run (tests/integration/test_poison_fuzz_redis.py) these strategies.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentbus import Agent, Context, Envelope, MemoryTransport, Message, Runtime, handle
from agentbus.testing import wait_for
from agentbus.testing.raw_entries import add_raw

TOPIC = "hostile.orders"
MAX_BYTES = 16 * 1024
#: JSON nested deeper than this is refused (the fast parser's limit is 200 levels).
MAX_DEPTH = 200


class Order(Message, type="hostile.Order"):
    sku: str
    qty: int


class Clerk(Agent, name="hostile-clerk"):
    def __init__(self) -> None:
        super().__init__()
        self.handled: list[str] = []

    @handle(TOPIC)
    async def take(self, order: Order, ctx: Context) -> None:
        self.handled.append(order.sku)


@dataclass(frozen=True)
class Case:
    """One raw entry and the dead-letter reason it must get."""

    fields: dict[str, bytes]
    reason: str


def _event(**overrides: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "specversion": "1.0",
        "id": "01HOSTILE0000000000000000",
        "source": "fuzzer",
        "type": "hostile.Order",
        "topic": TOPIC,
        "data": {"sku": "ok", "qty": 1},
    }
    obj.update(overrides)
    return {k: v for k, v in obj.items() if v is not _DROP}


_DROP = object()


def _raw(obj: Any) -> dict[str, bytes]:
    return {"e": json.dumps(obj).encode()}


def oracle(payload: bytes) -> str:
    """The reason a payload must be dead-lettered for, derived independently of agentbus."""
    if len(payload) > MAX_BYTES:
        return "event too large"
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid UTF-8"
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):  # a number past 4300 digits is a ValueError too
        return "invalid JSON"
    if _depth(obj) > MAX_DEPTH or _has_surrogate(obj):
        return "invalid JSON"
    if not isinstance(obj, dict):
        return "not a CloudEvent"
    if any(not obj.get(k) for k in ("specversion", "id", "source", "type")):
        return "missing CloudEvents attribute"
    if obj["specversion"] != "1.0":
        return "unsupported specversion"
    attrs = ("id", "source", "type", "time", "subject", "datacontenttype", "dataschema", "topic",
             "runid", "causationid", "correlationid", "replyto", "partitionkey", "traceparent",
             "tracestate")  # fmt: skip
    if any(obj.get(k) is not None and not isinstance(obj[k], str) for k in attrs):
        return "invalid CloudEvents attribute"
    if obj["type"] != "hostile.Order":
        return "unknown message type"
    data = obj.get("data")
    valid = (
        isinstance(data, dict)
        and isinstance(data.get("sku"), str)
        and isinstance(data.get("qty"), int)
        and not isinstance(data.get("qty"), bool)
    )
    return "handled" if valid else "invalid payload"


def _walk(obj: Any) -> list[tuple[Any, int]]:
    """Every value in ``obj`` (keys too) with its container depth."""
    out, stack = [], [(obj, 0)]
    while stack:
        value, depth = stack.pop()
        out.append((value, depth))
        if isinstance(value, dict):
            stack.extend((k, depth + 1) for k in value)
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return out


def _depth(obj: Any) -> int:
    return max(d + isinstance(v, dict | list) for v, d in _walk(obj))


def _has_surrogate(obj: Any) -> bool:
    return any(
        isinstance(v, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in v) for v, _ in _walk(obj)
    )


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)
truthy_non_strings = (
    st.integers(min_value=1) | st.lists(st.integers(), min_size=1, max_size=2) | st.just(True)
)

garbage_entries = st.dictionaries(
    st.text("abcdfghxyz_-", min_size=1, max_size=6), st.binary(max_size=40), min_size=1, max_size=3
).map(lambda f: Case(f, "not an agentbus event"))
bad_utf8 = st.binary(min_size=1, max_size=40).map(lambda b: b"\xff\xfe" + b)
bad_json = st.text(max_size=30).map(lambda t: ("{" + t).encode())
non_objects = json_values.filter(lambda v: not isinstance(v, dict)).map(
    lambda v: json.dumps(v).encode()
)
missing = st.sets(st.sampled_from(["specversion", "id", "source", "type"]), min_size=1).map(
    lambda names: json.dumps(_event(**dict.fromkeys(names, _DROP))).encode()
)
mistyped = st.tuples(
    st.sampled_from(["id", "source", "type", "subject", "time", "runid", "replyto"]),
    truthy_non_strings,
).map(lambda kv: json.dumps(_event(**{kv[0]: kv[1]})).encode())
unknown_types = st.text("abcxyz.", min_size=1, max_size=12).map(
    lambda t: json.dumps(_event(type="zz." + t)).encode()
)
bad_payloads = json_values.map(
    lambda v: json.dumps(_event(data={"sku": v, "qty": "many"})).encode()
)
oversized = st.integers(min_value=MAX_BYTES, max_value=3 * MAX_BYTES).map(
    lambda n: json.dumps(_event(subject="x" * n)).encode()
)
arbitrary_bytes = st.binary(max_size=200)
# One surrogate code point among characters that are none (text() draws no surrogates),
# so it stays lone; json.dumps writes it as a \\udXXX escape.
_lone = st.builds(
    lambda a, c, b: a + chr(c) + b,
    st.text(max_size=6),
    st.integers(0xD800, 0xDFFF),
    st.text(max_size=6),
)
_SURROGATE_PLACES = ("id", "source", "type", "topic", "runid", "subject", "sig", "sku", "key")


def _with_surrogate(place: str, value: str) -> bytes:
    if place == "sku":
        return json.dumps(_event(data={"sku": value, "qty": 1})).encode()
    if place == "key":
        return json.dumps(_event(data={"sku": "ok", "qty": 1, value: 1})).encode()
    return json.dumps(_event(**{place: value})).encode()


lone_surrogates = st.builds(_with_surrogate, st.sampled_from(_SURROGATE_PLACES), _lone)


def _spliced(place: str, text: str) -> bytes:
    """An event with ``text`` (raw JSON, which json.dumps cannot make) at ``place``."""
    if place == "qty":
        obj = _event(data={"sku": "ok", "qty": "@@"})
    elif place == "ext":
        obj = _event(weird="@@")
    else:
        obj = _event(data={"sku": "ok", "qty": 1, "extra": ["@@"]})
    return json.dumps(obj).replace('"@@"', text).encode()


huge_numbers = st.builds(
    lambda digits, sign, place: _spliced(place, sign + "7" * digits),
    st.integers(4301, 9000),
    st.sampled_from(["", "-"]),
    st.sampled_from(["qty", "ext", "nested"]),
)
deep_nesting = st.builds(
    lambda n, kind, place: _spliced(
        place, "[" * n + "]" * n if kind == "[" else '{"a":' * n + "1" + "}" * n
    ),
    st.integers(MAX_DEPTH + 10, 2500),
    st.sampled_from(["[", "{"]),
    st.sampled_from(["qty", "ext", "nested"]),
)
wrong_data_types = json_values.filter(lambda v: not isinstance(v, dict)).map(
    lambda v: json.dumps(_event(data=v)).encode()
)
_extension_names = st.text("abcdefghxyz0123456789", min_size=1, max_size=8).filter(
    lambda n: n not in _event() and n not in ("time", "subject", "runid", "replyto")
)
extra_attributes = st.builds(
    lambda extras, broken: json.dumps({**_event(**broken), **extras}).encode(),
    st.dictionaries(_extension_names, json_values, min_size=1, max_size=4),
    st.sampled_from(
        [{"type": "zz.Nope"}, {"data": {"sku": 1, "qty": "x"}}, {"id": _DROP}, {"specversion": "9"}]
    ),
)
payloads = st.one_of(
    bad_utf8,
    bad_json,
    non_objects,
    missing,
    mistyped,
    unknown_types,
    bad_payloads,
    oversized,
    arbitrary_bytes,
    lone_surrogates,
    huge_numbers,
    deep_nesting,
    wrong_data_types,
    extra_attributes,
)
hostile_cases = garbage_entries | payloads.map(lambda p: Case({"e": p}, oracle(p))).filter(
    lambda c: c.reason != "handled"
)


async def run_scenario(
    cases: list[Case],
    make_runtime: Callable[[], Runtime],
    add_raw: Callable[[Runtime, str, dict[str, bytes]], Awaitable[str]],
) -> None:
    """Inject ``cases`` then one valid order; check dead letters and the runtime's health."""
    clerk = Clerk()
    async with make_runtime() as rt:
        rt.add(clerk)
        await asyncio.sleep(0.05)
        expected: dict[str, str] = {}
        for case in cases:
            expected[await add_raw(rt, TOPIC, case.fields)] = case.reason
        good = Envelope.for_message(Order(sku="sentinel", qty=1), source="test", topic=TOPIC)
        await add_raw(rt, TOPIC, {"e": good.encode()})

        async def settled() -> bool:
            letters = await rt.transport.admin.dead_letters(TOPIC, count=1000)
            return clerk.handled == ["sentinel"] and len(letters) >= len(cases)

        await wait_for(settled, timeout=20, message="the sentinel handled and every case dead")
        letters = await rt.transport.admin.dead_letters(TOPIC, count=1000)
        got = {d.origin_id: d.reason for d in letters}
        assert got == expected, [(d.reason, d.error, d.payload[:80]) for d in letters]
        for d in letters:
            assert d.error, d  # with the detail of what was wrong
            assert d.agent == "hostile-clerk"
        await rt.idle()
        assert clerk.handled == ["sentinel"]


async def _memory_add_raw(rt: Runtime, topic: str, fields: dict[str, bytes]) -> str:
    transport = rt.transport
    assert isinstance(transport, MemoryTransport)
    return await add_raw(transport, topic, fields)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hostile_cases, min_size=1, max_size=8))
def test_hostile_entries_are_dead_lettered_with_the_precise_reason(cases: list[Case]) -> None:
    def make() -> Runtime:
        return Runtime("memory://?journal=", max_event_bytes=MAX_BYTES, block_ms=50)

    asyncio.run(run_scenario(cases, make, _memory_add_raw))


def test_the_oracle_agrees_on_known_cases() -> None:
    assert oracle(b"\xff") == "invalid UTF-8"
    assert oracle(b"{") == "invalid JSON"
    assert oracle(b"[1]") == "not a CloudEvent"
    assert oracle(json.dumps(_event(id=_DROP)).encode()) == "missing CloudEvents attribute"
    assert oracle(json.dumps(_event(specversion="0.3")).encode()) == "unsupported specversion"
    assert oracle(json.dumps(_event(source=5)).encode()) == "invalid CloudEvents attribute"
    assert oracle(json.dumps(_event(type="zz.Nope")).encode()) == "unknown message type"
    assert oracle(json.dumps(_event(data={"sku": 1, "qty": 1})).encode()) == "invalid payload"
    assert oracle(json.dumps(_event()).encode()) == "handled"
    assert oracle(json.dumps(_event(subject="x" * MAX_BYTES)).encode()) == "event too large"
    assert oracle(_with_surrogate("id", "01SURR\ud800")) == "invalid JSON"
    assert oracle(_with_surrogate("sku", "\ud83d\ude00")) == "handled"  # a pair is a character
    assert oracle(_spliced("qty", "7" * 5000)) == "invalid JSON"
    assert oracle(_spliced("qty", "7" * 4300)) == "handled"
    assert oracle(_spliced("nested", "[" * 300 + "]" * 300)) == "invalid JSON"
    assert oracle(_spliced("nested", "[" * 100 + "]" * 100)) == "handled"
    assert oracle(json.dumps(_event(data=[1])).encode()) == "invalid payload"
