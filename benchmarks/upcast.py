"""The cost of upcasting on the read path (agentbus.schema).

Events of a version-2 type, read as a consumer reads them: decoded off the wire and
validated (``decode_data``), and end to end through a runtime on the memory transport
(published, delivered, handled, acked; journal off so that the read path dominates). The
baseline is the same events sent as version 2; the measured side sends version 1 payloads
that one upcaster turns into version 2 on every read. A ratio < 1 is upcasting's cost.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from agentbus import Agent, Context, Envelope, Message, Runtime, decode_data, handle, upcaster

from ._harness import Outcome, Row, Settings, interleave, median, ratios, round_size

NAME = "upcast"
TITLE = "Upcasting on the read path (decode and memory-transport consumption)"


class Shipment(Message, type="bench.Shipment", version=2):
    order: str
    grams: int
    carrier: str = ""


@upcaster("bench.Shipment", from_version=1)
def _kilos_to_grams(data: dict[str, Any]) -> dict[str, Any]:
    return {"order": data["order"], "grams": int(data["kilos"] * 1000)}


def _wire(version: int, n: int) -> list[bytes]:
    out = []
    for i in range(n):
        if version == 1:
            env = Envelope(type="bench.Shipment", source="s", data={"order": f"o{i}", "kilos": 1.5})
        else:
            env = Envelope.for_message(Shipment(order=f"o{i}", grams=1500), source="s")
        out.append(env.encode())
    return out


async def _decode(raw: list[bytes]) -> float:
    started = time.perf_counter()
    for payload in raw:
        decode_data(Envelope.decode(payload))
    return len(raw) / (time.perf_counter() - started)


class _Counter(Agent, name="bench-shipments"):
    def __init__(self, want: int) -> None:
        super().__init__()
        self.want = want
        self.seen = 0
        self.done = asyncio.Event()

    @handle("bench.shipments")
    async def on(self, s: Shipment, ctx: Context) -> None:
        self.seen += 1
        if self.seen == self.want:
            self.done.set()


async def _consume(version: int, n: int) -> float:
    envelopes = [Envelope.decode(p) for p in _wire(version, n)]
    agent = _Counter(n)
    async with Runtime("memory://?journal=", journal=False) as rt:
        rt.add(agent)
        await rt.ready()
        started = time.perf_counter()
        for env in envelopes:
            await rt.publish_envelope("bench.shipments", env)
        await asyncio.wait_for(agent.done.wait(), 120)
        return n / (time.perf_counter() - started)


async def run(settings: Settings) -> Outcome:
    n = settings.count(50_000, 10_000)
    decode_n = round_size(n, 2_000)
    consume_n = round_size(n // 5, 1_000)
    wire = {v: _wire(v, n) for v in (1, 2)}
    results = await interleave(
        settings.rounds,
        [
            ("decode v2", lambda r: _decode(wire[2][: decode_n(r)])),
            ("decode v1", lambda r: _decode(wire[1][: decode_n(r)])),
            ("consume v2", lambda r: _consume(2, consume_n(r))),
            ("consume v1", lambda r: _consume(1, consume_n(r))),
        ],
    )
    out = Outcome(NAME)
    for what, count in (("decode", n), ("consume", n // 5)):
        out.rows.append(
            Row(
                NAME,
                f"{count} events, {what} v1 upcast (events/s)",
                f"{median(results[f'{what} v1']):,.0f}",
                f"no upcast {median(results[f'{what} v2']):,.0f}",
                ratios(results[f"{what} v1"], results[f"{what} v2"]),
            )
        )
    out.notes.append(
        "upcast: one upcaster (v1 -> v2) per event; consume = memory transport, journal off. "
        "Per-round rates (events/s): "
        + "; ".join(f"{k}: {', '.join(f'{v:,.0f}' for v in vs)}" for k, vs in results.items())
    )
    return out
