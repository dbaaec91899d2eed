"""The one retry helper: what is retried, what stops it, how long it waits."""

from __future__ import annotations

import pytest

from agentbus._retry import doubling, jittered, retry_io
from agentbus.errors import TransportClosed, TransportError, TransportUnavailable


def test_doubling_delays_double_up_to_the_maximum() -> None:
    delays = doubling(0.05, 0.3)
    assert [delays(n) for n in range(1, 6)] == [0.05, 0.1, 0.2, 0.3, 0.3]
    assert delays(10_000) == 0.3  # no overflow however long the outage


def test_jittered_delays_stay_in_the_top_half() -> None:
    delays = jittered(0.1, 5.0)
    for n in range(1, 10):
        base = min(5.0, 0.1 * 2 ** (n - 1))
        assert base / 2 <= delays(n) <= base


def _failing(*errors: BaseException) -> tuple[list[int], object]:
    calls: list[int] = []

    async def op() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "done"

    return calls, op


async def test_store_errors_are_retried_until_it_works() -> None:
    calls, op = _failing(TransportUnavailable("down"), TransportError("broken"))
    seen: list[BaseException] = []

    async def on_error(exc: BaseException) -> None:
        seen.append(exc)

    result = await retry_io(op, what="x", delays=lambda n: 0.0, on_error=on_error)  # type: ignore[arg-type]
    assert result == "done"
    assert len(calls) == 3
    assert [type(e) for e in seen] == [TransportUnavailable, TransportError]


async def test_a_closed_store_is_never_retried() -> None:
    calls, op = _failing(TransportClosed("closed"))
    with pytest.raises(TransportClosed):
        await retry_io(op, what="x", delays=lambda n: 0.0)  # type: ignore[arg-type]
    assert len(calls) == 1


async def test_only_the_named_errors_are_retried() -> None:
    calls, op = _failing(TransportError("broken"))
    with pytest.raises(TransportError):
        await retry_io(op, what="x", delays=lambda n: 0.0, retry_on=TransportUnavailable)  # type: ignore[arg-type]
    assert len(calls) == 1
    calls, op = _failing(ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        await retry_io(op, what="x", delays=lambda n: 0.0)  # type: ignore[arg-type]


async def test_on_error_may_stop_the_retries() -> None:
    calls, op = _failing(TransportError("a"), TransportError("b"))

    async def stop(exc: BaseException) -> None:
        raise exc

    with pytest.raises(TransportError, match="a"):
        await retry_io(op, what="x", delays=lambda n: 0.0, on_error=stop)  # type: ignore[arg-type]
    assert len(calls) == 1
