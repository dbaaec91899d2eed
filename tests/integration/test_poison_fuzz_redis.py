"""Fuzz: 10,000 hostile entries through a real Redis, two workers, zero crashes.

The strategies and the oracle are those of tests/unit/test_hostile_input.py (arbitrary
bytes and fields, invalid UTF-8 and JSON, lone surrogates, numbers past 4300 digits,
nesting past the parser's limit, wrong types, extra attributes, unknown types, invalid
payloads, oversized events). Hypothesis draws 100 batches of 100; each batch is added
raw to one topic with a valid event after every tenth entry, and read by two runtimes
sharing the group. After each batch every hostile entry is in the dead-letter stream
with the reason the oracle predicts; at the end every valid event was handled exactly
once, nothing is pending, no background task died and nothing was logged as an error.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import logging
import sys
import time
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from agentbus import Envelope, Runtime
from agentbus.testing import unique_prefix, wait_for
from agentbus.testing.raw_entries import add_raw

pytestmark = [pytest.mark.redis]

BATCHES = 100
BATCH = 100
VALID_EVERY = 10


def _cases_module() -> ModuleType:
    name = "hostile_input_cases"  # shared with test_hostile_input_redis.py
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parents[1] / "unit" / "test_hostile_input.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


cases_module = _cases_module()
TOPIC = cases_module.TOPIC


def test_ten_thousand_hostile_entries_are_dead_lettered_and_nothing_breaks(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="agentbus")  # a dead letter is a warning
    caplog.set_level(logging.ERROR, logger="asyncio")
    loop = asyncio.new_event_loop()
    unhandled: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: unhandled.append(context))
    prefix = unique_prefix("fuzz")
    url = f"{redis_url}?prefix={prefix}"
    options: dict[str, Any] = {"max_event_bytes": cases_module.MAX_BYTES, "block_ms": 50}
    workers = [Runtime(url, **options), Runtime(url, **options)]
    clerks = [cases_module.Clerk(), cases_module.Clerk()]
    for rt, clerk in zip(workers, clerks, strict=True):
        rt.add(clerk)
    for rt in workers:
        loop.run_until_complete(rt.start())
    transport = workers[0].transport
    skus = (f"valid-{n}" for n in itertools.count())
    totals = Counter[str]()

    def dead_lettered() -> int:
        return sum(rt.metrics.counts["dead_lettered"] for rt in workers)

    def handled() -> int:
        return sum(len(c.handled) for c in clerks)

    async def run_batch(cases: list[Any]) -> None:
        expected: dict[str, str] = {}
        valid = 0
        for n, case in enumerate(cases, 1):
            expected[await add_raw(transport, TOPIC, case.fields)] = case.reason
            if n % VALID_EVERY == 0:
                env = Envelope.for_message(
                    cases_module.Order(sku=next(skus), qty=1), source="fuzz", topic=TOPIC
                )
                await add_raw(transport, TOPIC, {"e": env.encode()})
                valid += 1
        totals["hostile"] += len(cases)
        totals["valid"] += valid
        await wait_for(
            lambda: dead_lettered() >= totals["hostile"] and handled() >= totals["valid"],
            timeout=60,
            message=f"batch {totals['batches'] + 1} dead-lettered and handled",
        )
        letters = await transport.admin.dead_letters(TOPIC, count=2 * BATCH)
        got = {d.origin_id: d.reason for d in letters}
        wrong = [
            (d.reason, expected.get(d.origin_id), d.error[:120], d.payload[:80])
            for d in letters
            if got[d.origin_id] != expected.get(d.origin_id)
        ]
        assert not wrong, wrong[:5]
        assert got.keys() == expected.keys()
        assert all(d.error and d.reason and d.agent == "hostile-clerk" for d in letters)
        await transport.admin.remove_dead_letters(TOPIC, [d.id for d in letters])
        totals["batches"] += 1

    @settings(
        max_examples=BATCHES,
        deadline=None,
        phases=[Phase.generate],  # bounded: no shrinking of a 100-entry batch
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(cases_module.hostile_cases, min_size=BATCH, max_size=BATCH))
    def check(cases: list[Any]) -> None:
        loop.run_until_complete(run_batch(cases))

    started = time.monotonic()
    try:
        check()
        for rt in workers:
            loop.run_until_complete(rt.idle(timeout=30))
        elapsed = time.monotonic() - started
        infos = loop.run_until_complete(transport.admin.topics())
        alive = [
            not task.done()
            for rt in workers
            for task in [
                rt.writer._task,
                rt._hosted.lease_task,
                *(s._task for s in rt._hosted.subs),
            ]
            if task is not None
        ]
    finally:
        for rt in workers:
            loop.run_until_complete(rt.aclose())
        cleaner = Runtime(url)
        loop.run_until_complete(cleaner.transport.admin.delete_prefix())  # type: ignore[attr-defined]
        loop.run_until_complete(cleaner.transport.aclose())
        loop.close()

    handled_skus = Counter(sku for clerk in clerks for sku in clerk.handled)
    (info,) = [t for t in infos if t.topic == TOPIC]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    print(
        f"\nfuzz: {totals['hostile']} hostile entries in {totals['batches']} batches, "
        f"{elapsed:.1f}s; dead-lettered {dead_lettered()}; crashes {len(errors) + len(unhandled)}; "
        f"valid handled {sum(handled_skus.values())} of {totals['valid']} "
        f"(each once: {set(handled_skus.values()) == {1}}); per worker "
        f"{[len(c.handled) for c in clerks]} handled, "
        f"{[rt.metrics.counts['dead_lettered'] for rt in workers]} dead-lettered"
    )
    assert totals["hostile"] >= BATCHES * BATCH
    assert dead_lettered() == totals["hostile"]
    assert len(handled_skus) == totals["valid"]
    assert set(handled_skus.values()) == {1}
    assert info.groups[0].pending == 0
    assert len(alive) == 6
    assert all(alive)
    assert errors == [], [r.getMessage() for r in errors[:5]]
    assert unhandled == []
