"""Scale-out on Redis Cluster: fan-out on 1 master vs 3, and what ``?wait=1`` costs a publish.

**Fan-out** (the same workload on both, interleaved): one process runs a ``Runtime``
(journal on, default settings) hosting one shared no-op agent bound to six topics, two
per cluster master (picked by hash slot); a run publishes N ``Ping`` events round-robin
over the topics, 64 publishes in flight. The clock stops when every event was handled
and the writer flushed. Targets: a private ``redis-server`` (one master) and a private
3-master Redis Cluster without replicas (``LocalCluster(3, 0)``: replicas would burn CPU
on this machine's two cores and are not what the throughput figure is about). Redis CPU
is the change in ``used_cpu_user + used_cpu_sys`` (``INFO cpu``) of each master over the
timed window; client CPU is this process's (``getrusage``) over the same window.

**WAIT** (sequential publishes, journal on, no consumer): publish latency with
``?wait=1`` (every write is followed by ``WAIT 1``) and without, on a private primary
with one replica (``--replicaof``) and on a 3-master cluster with one replica each.

Every round checks its result: delivered = published on every topic, nothing pending,
the run's journal counters (events, records); with ``?wait=1`` the replica already
holds every published entry when the last publish returns.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from agentbus import Agent, Context, Run, Runtime
from agentbus.testing.redis_cluster import LocalCluster
from agentbus.testing.redis_server import RedisServer

from ._deployments import (
    NODE_CONFIG,
    Target,
    cluster_target,
    command_calls,
    idle_cpu,
    replica_link_up,
    single_target,
    topics_by_master,
    wait_for,
)
from ._harness import (
    WINDOW,
    BenchError,
    Outcome,
    Ping,
    Row,
    Settings,
    Stopwatch,
    Variant,
    interleave,
    median,
    percentile,
    ping,
    ping_payload,
    ratios,
    round_size,
    unique_prefix,
)

NAME = "cluster"
TITLE = "Scale-out: 1 Redis master vs a 3-master Cluster; the cost of ?wait=1"
GROUP = "bench-cluster-sink"
TOPICS_PER_MASTER = 2
WAIT_TOPIC = "bench.wait"


# -- fan-out ------------------------------------------------------------------------------------
class MultiSink(Agent, name=GROUP):
    """One shared no-op agent on several topics; ``done`` is set at ``expected``."""

    def __init__(self, topics: list[str], expected: int) -> None:
        super().__init__()
        self.expected = expected
        self.counts = dict.fromkeys(topics, 0)
        self.count = 0
        self.done = asyncio.Event()
        for topic in topics:
            self.bind(topic, self.on_ping)

    async def on_ping(self, msg: Ping, ctx: Context) -> None:
        topic = ctx.event.topic if ctx.event is not None else ""
        self.counts[topic] = self.counts.get(topic, 0) + 1
        self.count += 1
        if self.count >= self.expected:
            self.done.set()


async def publish_spread(run: Run, n: int, topics: list[str]) -> None:
    """Publish ``n`` pings round-robin over ``topics``, ``WINDOW`` publishes in flight."""

    async def lane(start: int) -> None:
        for seq in range(start, n, WINDOW):
            await run.publish(topics[seq % len(topics)], ping(seq))

    await asyncio.gather(*(lane(i) for i in range(min(WINDOW, n))))


@dataclass
class FanoutRound:
    """What one fan-out round measured (CPU in seconds, over the timed window)."""

    n: int
    seconds: float
    redis_cpu: dict[int, float]  # per master
    client_cpu: float  # this process
    calls: Counter[str]  # Redis commands run, all masters (INFO commandstats)

    def redis_us(self, port: int, idle: dict[int, float]) -> float:
        """Master ``port``'s CPU µs per message of the round, its idle rate subtracted."""
        return (self.redis_cpu[port] - idle[port] * self.seconds) * 1e6 / self.n


def _process_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def fanout_round(target: Target, topics: list[str], n: int) -> FanoutRound:
    prefix = unique_prefix("cluster")
    sink = MultiSink(topics, n)
    rt = Runtime(target.url_for(prefix), journal=True)
    rt.add(sink)
    try:
        async with rt:
            async with rt.run("bench-cluster") as run:
                calls0 = command_calls(target.masters)
                redis0, client0 = target.master_cpu(), _process_cpu()
                with Stopwatch() as sw:
                    await publish_spread(run, n, topics)
                    await asyncio.wait_for(sink.done.wait(), timeout=30 + n / 100)
                    await rt.writer.flush()
                client1, redis1 = _process_cpu(), target.master_cpu()
                calls1 = command_calls(target.masters)
            keys = rt.transport_keys
        await check_fanout(target, keys, run.run_id, sink, topics, n)
    finally:
        await target.delete_prefix(prefix)
    calls1.subtract(calls0)
    calls1["info"] -= len(target.masters)  # our own INFO cpu calls
    return FanoutRound(
        n=n,
        seconds=sw.seconds,
        redis_cpu={p: redis1[p] - redis0[p] for p in target.masters},
        client_cpu=client1 - client0,
        calls=+calls1,
    )


async def check_fanout(
    target: Target, keys: Any, run_id: str, sink: MultiSink, topics: list[str], n: int
) -> None:
    """Every topic's stream holds what was sent to it, all handled once, nothing pending;
    the run's journal counts every event and its three records (+ start and finish)."""
    per_topic = {t: len(range(i, n, len(topics))) for i, t in enumerate(topics)}
    r = await target.client()
    try:
        for topic, expected in per_topic.items():
            stream = keys.topic(topic)
            length = await r.xlen(stream)
            pending = (await r.xpending(stream, GROUP))["pending"]
            handled = sink.counts.get(topic, 0)
            if length != expected or handled != expected or pending:
                raise BenchError(
                    f"{target.name}: {topic} published {expected}, stream holds {length}, "
                    f"handled {handled}, {pending} pending"
                )
        counters = await r.hmget(keys.run(run_id), "events", "records")
        events, records = (int(c or 0) for c in counters)
    finally:
        await r.aclose()
    if events != n or records != 3 * n + 2:
        raise BenchError(
            f"{target.name}: the journal counts {events} events / {records} records, "
            f"expected {n} / {3 * n + 2}"
        )


@dataclass
class FanoutVariant:
    """A fan-out variant: where, over which topics, and what its rounds measured."""

    label: str
    target: Target
    topics: list[str]
    idle: dict[int, float]
    rounds: list[FanoutRound] = field(default_factory=list)

    async def __call__(self, r: int, n: int) -> float:
        result = await fanout_round(self.target, self.topics, n)
        if r >= 0:
            self.rounds.append(result)
        return result.n / result.seconds

    def redis_us(self) -> list[float]:
        """Per round: Redis CPU µs per message, all masters together."""
        return [sum(x.redis_us(p, self.idle) for p in self.target.masters) for x in self.rounds]

    def client_us(self) -> list[float]:
        return [x.client_cpu * 1e6 / x.n for x in self.rounds]

    def calls(self) -> list[float]:
        return [sum(x.calls.values()) / x.n for x in self.rounds]

    def top_calls(self, k: int = 6) -> str:
        total: Counter[str] = Counter()
        for x in self.rounds:
            total.update(x.calls)
        msgs = sum(x.n for x in self.rounds)
        return ", ".join(f"{cmd} {c / msgs:.2f}" for cmd, c in total.most_common(k))


async def measure_fanout(settings: Settings, out: Outcome) -> None:
    n = settings.count(5000, 1500)
    size = round_size(n, 500)
    with RedisServer(config=NODE_CONFIG) as server, LocalCluster(3, 0) as cluster:
        single, multi = single_target(server), cluster_target(cluster)
        spread = await topics_by_master(multi, TOPICS_PER_MASTER)
        topics = [t for names in spread.values() for t in names]
        idle_one, idle_many = await idle_cpu(single), await idle_cpu(multi)
        variants = [
            FanoutVariant("1 master, 1 topic", single, topics[:1], idle_one),
            FanoutVariant("1 master", single, topics, idle_one),
            FanoutVariant("3-master cluster", multi, topics, idle_many),
        ]
        rates = await interleave(
            settings.rounds,
            [(v.label, lambda r, v=v: v(r, size(r))) for v in variants],
        )
    report_fanout(out, n, rates, variants, spread)


def report_fanout(
    out: Outcome,
    n: int,
    rates: dict[str, list[float]],
    variants: list[FanoutVariant],
    spread: dict[int, list[str]],
) -> None:
    one_topic, one, many = variants
    shards = len(spread)
    # Per master: CPU per message *that master owned* (its topics carry 1/shards of them).
    per_master = {
        p: median([x.redis_us(p, many.idle) * shards for x in many.rounds]) for p in spread
    }
    c1, cn = median(one.redis_us()), median(many.redis_us())
    client1, clientn = median(one.client_us()), median(many.client_us())
    measures = (
        ("fan-out {}, journal on (msg/s)", lambda v: rates[v.label], "{:,.0f}"),
        ("Redis CPU per message, all masters (µs)", FanoutVariant.redis_us, "{:.1f}"),
        ("Redis commands per message, all masters", FanoutVariant.calls, "{:.2f}"),
        ("client CPU per message, this process (µs)", FanoutVariant.client_us, "{:.0f}"),
    )
    for title, values, fmt in measures:
        label = title.format(f"{n} msgs over {len(many.topics)} topics")
        for a, b in ((many, one), (one, one_topic)):
            out.rows.append(
                Row(
                    NAME,
                    label,
                    f"{a.label} {fmt.format(median(values(a)))}",
                    f"{b.label} {fmt.format(median(values(b)))}",
                    ratios(values(a), values(b)),
                )
            )
    # The busiest master of each round (the run's journal sits on one master, a different
    # one per round since run ids are random), median over the rounds.
    hottest = median([max(x.redis_us(p, many.idle) for p in spread) * shards for x in many.rounds])
    out.notes.append(
        f"cluster fan-out: one process (a run publishing round-robin over "
        f"{len(many.topics)} topics, {TOPICS_PER_MASTER} per master by hash slot: "
        + "; ".join(f"{p}: {', '.join(ts)}" for p, ts in spread.items())
        + f"; one shared no-op agent bound to all of them), journal on, {n} messages per "
        f"round, {WINDOW} publishes in flight; '1 master, 1 topic' is the fanout scenario's "
        "shape. The cluster has no replicas (LocalCluster(3, 0)). Redis CPU = "
        "Δ(used_cpu_user + used_cpu_sys) of each master over the timed window minus its idle "
        f"rate (measured before the rounds: {sum(one.idle.values()) * 1e6:,.0f} µs/s on 1 "
        f"master, {sum(many.idle.values()) * 1e6:,.0f} µs/s over the 3 cluster masters). "
        "Per master, Redis CPU µs per message it owned (median over the rounds; each round's "
        "run journal lives on one of them): "
        + ", ".join(f"{p}: {us:.1f}" for p, us in per_master.items())
        + ". Commands per message by kind: "
        + "; ".join(f"{v.label}: {v.top_calls()}" for v in variants)
        + ". Per-round rates (msg/s): "
        + "; ".join(f"{k}: {', '.join(f'{v:,.0f}' for v in vs)}" for k, vs in rates.items())
        + "; per-round Redis CPU (µs/msg): "
        + "; ".join(f"{v.label}: {', '.join(f'{x:.1f}' for x in v.redis_us())}" for v in variants)
    )
    out.notes.append(
        f"cluster projection: a message costs {cn:.1f} µs of Redis CPU on the cluster "
        f"({c1:.1f} µs on one master), so one shard (one core) serves about "
        f"{1e6 / cn:,.0f} msg/s and N evenly loaded shards about N x {1e6 / cn:,.0f} "
        f"({3e6 / cn:,.0f} for 3, {10e6 / cn:,.0f} for 10) before Redis is the limit. The "
        f"busiest master of a round cost {hottest:.1f} µs per message it owned (median over "
        f"the rounds; one run's journal sits on one shard), which caps these 3 shards at {3e6 / hottest:,.0f} msg/s for a "
        f"single run. The client needs {clientn:.0f} µs of CPU per message on the cluster "
        f"({client1:.0f} on one master): about {clientn / cn:.1f} client cores per Redis "
        "core, so on this 2-core machine the Python process is the bottleneck and the "
        "measured msg/s say nothing about Redis capacity."
    )


# -- the cost of ?wait=1 ------------------------------------------------------------------------
async def publish_latencies(target: Target, n: int, wait: bool) -> tuple[list[float], int]:
    """Milliseconds of each of ``n`` sequential publishes, and how many ``WAIT`` commands
    the masters ran meanwhile. Checks the stream and the journal; with ``wait``, that
    every publish waited and the replica holds every entry when the last one returns."""
    prefix = unique_prefix("cluster-wait")
    latencies: list[float] = []
    rt = Runtime(target.url_for(prefix, "wait=1" if wait else ""), journal=True)
    try:
        async with rt, rt.run("bench-wait") as run:
            before = command_calls(target.masters)["wait"]
            for seq in range(n):
                t0 = time.perf_counter()
                await run.publish(WAIT_TOPIC, ping(seq))
                latencies.append((time.perf_counter() - t0) * 1000)
            waits = command_calls(target.masters)["wait"] - before
            stream = rt.transport_keys.topic(WAIT_TOPIC)
            on_replica = await replica_length(target, stream) if wait else n
        r = await target.client()
        try:
            length = await r.xlen(stream)
            events = int(await r.hget(rt.transport_keys.run(run.run_id), "events") or 0)
        finally:
            await r.aclose()
        # Whether every publish waited is judged by measure_wait over all rounds, so the
        # raw WAIT figures survive a transport that does not wait.
        if length != n or events != n or on_replica != n or (waits and not wait):
            raise BenchError(
                f"{target.name} wait={int(wait)}: published {n}, stream holds {length}, "
                f"journal counts {events}, replica holds {on_replica}, {waits} WAITs"
            )
    finally:
        await target.delete_prefix(prefix)
    return latencies, waits


async def master_of(target: Target, key: str) -> int:
    """The port of the master that owns ``key``."""
    if not target.cluster:
        return target.masters[0]
    r = await target.client()
    try:
        return int(r.get_node_from_key(key).port)
    finally:
        await r.aclose()


async def replica_length(target: Target, stream: str) -> int:
    """XLEN of ``stream`` read on a replica of the master that owns it."""
    master = await master_of(target, stream)
    replica = aioredis.Redis(
        host="127.0.0.1", port=target.replicas[master][0], single_connection_client=True
    )
    try:
        if target.cluster:
            await replica.execute_command("READONLY")  # serve reads of its master's slots
        return int(await replica.xlen(stream))
    finally:
        await replica.aclose()


async def raw_latencies(target: Target, n: int, wait: bool) -> tuple[list[float], int]:
    """The floor: redis-py ``XADD`` of the same bytes (and ``WAIT 1 1000`` on the same
    connection) straight to the master owning the stream, ``n`` times in sequence."""
    key = unique_prefix("cluster-wait-raw") + "{" + WAIT_TOPIC + "}"
    payload = ping_payload()
    r = aioredis.Redis(
        host="127.0.0.1", port=await master_of(target, key), single_connection_client=True
    )
    latencies: list[float] = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            await r.xadd(key, {"e": payload})
            if wait and int(await r.execute_command("WAIT", 1, 1000)) != 1:
                raise BenchError(f"{target.name}: WAIT 1 was not acknowledged in 1 s")
            latencies.append((time.perf_counter() - t0) * 1000)
        on_replica = await replica_length(target, key) if wait else n
        length = await r.xlen(key)
        if length != n or on_replica != n:
            raise BenchError(
                f"{target.name} raw wait={int(wait)}: sent {n}, stream holds {length}, "
                f"replica holds {on_replica}"
            )
    finally:
        await r.unlink(key)
        await r.aclose()
    return latencies, n if wait else 0


Latencies = Callable[[Target, int, bool], Awaitable[tuple[list[float], int]]]
KINDS: dict[str, Latencies] = {"agentbus": publish_latencies, "raw": raw_latencies}


async def measure_wait(settings: Settings, out: Outcome) -> None:
    n = settings.count(400, 200)
    size = round_size(n, 50)
    with (
        RedisServer(config=NODE_CONFIG) as primary,
        RedisServer(
            config=NODE_CONFIG, args=["--replicaof", "127.0.0.1", str(primary.port)]
        ) as replica,
        LocalCluster(3, 1) as cluster,
    ):
        await wait_for(lambda: replica_link_up(replica.port), 30, "the replica's link")
        targets = [single_target(primary, replica), cluster_target(cluster)]
        samples: dict[str, list[float]] = {}
        waits: dict[str, int] = {}

        def variant(kind: str, target: Target, wait: bool) -> Variant:
            key = f"{kind} {target.name} wait={int(wait)}"
            samples[key], waits[key] = [], 0

            async def one(r: int) -> float:
                lat, w = await KINDS[kind](target, size(r), wait)
                if r >= 0:
                    samples[key].extend(lat)
                    waits[key] += w
                return median(lat)

            return key, one

        medians = await interleave(
            settings.rounds,
            [variant(k, t, w) for t in targets for k in KINDS for w in (False, True)],
        )
    for target in targets:
        for kind, p in (("agentbus", 50.0), ("agentbus", 99.0), ("raw", 50.0)):
            off, on = f"{kind} {target.name} wait=0", f"{kind} {target.name} wait=1"
            if waits[on] < len(samples[on]):
                if p == 50:
                    problem = (
                        f"with ?wait=1 the masters ran {waits[on] / len(samples[on]):.2f} "
                        "WAIT per publish (needs >= 1): publishes do not wait for a replica"
                    )
                    out.error = f"{target.name}: {problem}"
                    out.rows.append(
                        Row(
                            NAME,
                            f"run.publish with ?wait=1, {target.name}",
                            "FAILED",
                            "-",
                            note=problem,
                        )
                    )
                continue
            what = "run.publish" if kind == "agentbus" else "raw XADD (+ WAIT 1)"
            extra = percentile(samples[on], p) - percentile(samples[off], p)
            out.rows.append(
                Row(
                    NAME,
                    f"{what} p{p:.0f}, {target.name} + 1 replica each (ms)",
                    f"wait=1 {percentile(samples[on], p):.2f}",
                    f"no wait {percentile(samples[off], p):.2f}",
                    ratios(medians[on], medians[off])
                    if p == 50
                    else percentile(samples[on], p) / percentile(samples[off], p),
                    note=f"{extra * 1000:+.0f} µs",
                )
            )
    out.notes.append(
        f"cluster wait: {n} sequential awaited publishes per round and variant, journal on, "
        "no consumer (raw: XADD of the same bytes, and WAIT 1 1000 on the same connection, "
        "to the stream's master). Percentiles over all recorded samples; p50 ratio = median "
        "of the per-round median ratios, p99 ratio = ratio of the pooled p99s. WAIT "
        "commands per publish: "
        + ", ".join(f"{k}: {w / len(samples[k]):.2f}" for k, w in waits.items())
        + ". Per-round medians (ms): "
        + "; ".join(f"{k}: {', '.join(f'{v:.2f}' for v in vs)}" for k, vs in medians.items())
    )


async def run(settings: Settings) -> Outcome:
    out = Outcome(NAME)
    await measure_fanout(settings, out)
    await measure_wait(settings, out)
    return out
