"""The PostgreSQL journal archive: storing a run, reading it back, bytes per event.

A 100,000-event run is recorded on Redis (``Ping`` events published through a runtime
with the journal on, no agent subscribed: 100,002 records, as in the replay scenario).
Then, interleaved for each round:

- reading it: ``journal.records()`` from Redis (the hot store) against
  ``archive.read_journal()`` from PostgreSQL (same run, same records, compared);
- storing it: ``archive.store_run()`` of the whole run (chunking, the summary, the
  checksum, one transaction that replaces the earlier copy) and ``stored_digest()``.

Bytes per event: Redis ``MEMORY USAGE`` of the run's journal stream and metadata hash,
and PostgreSQL ``pg_total_relation_size`` of the archive's tables (indexes and TOAST
included), each divided by the run's events. Last, ``agentbus.archive.archive_runs``
moves the run for real (read from Redis, store, verify, delete the hot keys): the
end-to-end archive rate. Needs PostgreSQL (``$AGENTBUS_BENCH_POSTGRES_URL``, default
``postgresql://postgres@127.0.0.1:5432/test``); the scenario works in a schema of its
own and drops it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import time
from typing import Any

from agentbus import Journal, Runtime, open_archive
from agentbus.transports.archive_format import archive_chunks, digest, summarize

from ._harness import (
    BenchError,
    Outcome,
    Ping,
    Row,
    Settings,
    delete_prefix,
    interleave,
    median,
    ratios,
    redis_client,
    unique_prefix,
    with_prefix,
)
from .replay import build_run

NAME = "archive"
TITLE = "Journal archive (PostgreSQL): store, read a 100,000-event run, bytes per event"
POSTGRES_URL = os.environ.get(
    "AGENTBUS_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def _psql(sql: str) -> str:
    """One value from PostgreSQL through ``psql`` (the benchmark does not need a driver
    of its own for two size queries)."""
    done = subprocess.run(
        ["psql", POSTGRES_URL, "-Atc", sql], capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise BenchError(f"archive: psql failed: {done.stderr.strip()}")
    return done.stdout.strip()


def _pg_bytes(schema: str) -> int:
    """Bytes of the archive's tables in ``schema``, with their indexes and TOAST."""
    return int(
        _psql(
            f"select pg_total_relation_size('{schema}.runs') "
            f"+ pg_total_relation_size('{schema}.chunks')"
        )
    )


async def _redis_bytes(url: str, keys: list[str]) -> int:
    r = redis_client(url)
    try:
        total = 0
        for key in keys:
            total += int(await r.memory_usage(key, samples=0) or 0)
        return total
    finally:
        await r.aclose()


async def measure(url: str, prefix: str, events: int, rounds: int) -> Outcome:
    run_id, live_rate = await build_run(url, prefix, events, handled=False)
    schema = "bench_" + prefix.replace("-", "_").replace(":", "_").lower()
    archive_url = f"{POSTGRES_URL}?schema={schema}"
    out = Outcome(NAME)
    archive = open_archive(archive_url)
    try:
        await archive.upgrade()
        await archive.connect()
        async with Journal.open(with_prefix(url, prefix)) as journal:
            info = await journal.run(run_id)
            keys = journal.transport.keys
            redis_bytes = await _redis_bytes(url, [keys.journal(run_id), keys.run(run_id)])
            records = await journal.records(run_id)
            total = len(records)
            if total != events + 2:
                raise BenchError(f"archive: the journal holds {total} records, not {events + 2}")
            held: dict[str, Any] = {}

            async def store(r: int) -> float:
                t0 = time.perf_counter()
                chunks = archive_chunks(records)
                checksum = digest(c.body for c in chunks)
                await archive.store_run(info, chunks, summarize(records), checksum)
                if await archive.stored_digest(run_id) != (total, checksum):
                    raise BenchError("archive: the stored digest does not match")
                return total / (time.perf_counter() - t0)

            async def read_redis(r: int) -> float:
                held.clear()
                t0 = time.perf_counter()
                held["hot"] = await journal.records(run_id)
                return time.perf_counter() - t0

            async def read_pg(r: int) -> float:
                held.pop("archived", None)
                t0 = time.perf_counter()
                held["archived"] = await archive.read_journal(run_id)
                seconds = time.perf_counter() - t0
                if held["archived"] != records:
                    raise BenchError("archive: PostgreSQL returned different records")
                return seconds

            await store(-1)  # the run must be in PostgreSQL before it is read from there
            # Measured now, with one copy stored: the rounds replace it, leaving dead
            # tuples until autovacuum runs, which are not what a run costs.
            pg_bytes = _pg_bytes(schema)
            times = await interleave(
                rounds,
                [("store", store), ("redis", read_redis), ("pg", read_pg)],
                warm_up=False,
            )
            held.clear()
            # End to end: what `agentbus archive` does with this run (read from Redis,
            # store, verify, delete the hot copy), once: it deletes what it measures.
            from agentbus.archive import archive_runs

            report = await archive_runs(journal.transport.store, archive, older_than=0.0)
            if report.archived != [run_id]:
                raise BenchError(f"archive: archive_runs moved {report.archived}")
            if await journal.transport.store.get_run(run_id) is not None:
                raise BenchError("archive: the hot copy is still there")
    finally:
        await archive.aclose()
        _psql(f'drop schema if exists "{schema}" cascade')

    read_base = f"Redis journal.records() {median(times['redis']):.2f}"
    out.rows += [
        Row(
            NAME,
            f"read a {events:,}-event run ({total:,} records) from PostgreSQL (s)",
            f"{median(times['pg']):.2f}",
            read_base,
            ratios(times["pg"], times["redis"]),
            note="time: lower is better",
        ),
        Row(
            NAME,
            "store_run + stored_digest of that run (records/s)",
            f"{median(times['store']):,.0f}",
            "",
        ),
        Row(
            NAME,
            "archive_runs end to end: Redis read, store, verify, delete (records/s)",
            f"{report.records_per_second:,.0f}",
            "",
        ),
        Row(
            NAME,
            "bytes per event: PostgreSQL (tables, indexes, TOAST)",
            f"{pg_bytes / events:,.0f}",
            f"Redis MEMORY USAGE {redis_bytes / events:,.0f}",
            (pg_bytes / events) / (redis_bytes / events),
        ),
    ]
    out.notes.append(
        f"archive: built the {events:,}-event run at {live_rate:,.0f} events/s. Redis "
        f"{redis_bytes:,} bytes, PostgreSQL {pg_bytes:,} bytes for it. Per round: "
        + "; ".join(f"{k}: {', '.join(f'{v:,.2f}' for v in vs)}" for k, vs in times.items())
    )
    return out


async def random_run(url: str, prefix: str, events: int) -> str:
    """A run of ``events`` pings whose 100-character bodies are random (base64 of random
    bytes): far less compressible than the benchmark's repeated body, closer to real
    text payloads' worst case."""
    rt = Runtime(url, prefix=prefix)
    async with rt, rt.run("bench-archive-random") as run:
        for seq in range(events):
            await run.publish("bench.archive", Ping(seq=seq, body=secrets.token_urlsafe(75)))
        await rt.writer.flush()
    return run.run_id


async def handled_sizes(url: str, prefix: str, events: int, *, random: bool = False) -> Row:
    """Bytes per event of a run whose events an agent handled (three records each:
    published, delivered, handled), or with ``random``, of unhandled events with random
    bodies, in Redis and once archived."""
    if random:
        run_id = await random_run(url, prefix, events)
    else:
        run_id, _ = await build_run(url, prefix, events, handled=True)
    schema = "bench_" + prefix.replace("-", "_").replace(":", "_").lower()
    archive = open_archive(f"{POSTGRES_URL}?schema={schema}")
    try:
        await archive.upgrade()
        await archive.connect()
        async with Journal.open(with_prefix(url, prefix)) as journal:
            keys = journal.transport.keys
            redis_bytes = await _redis_bytes(url, [keys.journal(run_id), keys.run(run_id)])
            from agentbus.archive import archive_runs

            report = await archive_runs(journal.transport.store, archive, older_than=0.0)
            if report.archived != [run_id]:
                raise BenchError(f"archive: archive_runs moved {report.archived}")
        pg_bytes = _pg_bytes(schema)
    finally:
        await archive.aclose()
        _psql(f'drop schema if exists "{schema}" cascade')
    what = "event with a random body" if random else "handled event"
    return Row(
        NAME,
        f"bytes per {what} ({events:,} events, {report.records:,} records): PostgreSQL",
        f"{pg_bytes / events:,.0f}",
        f"Redis MEMORY USAGE {redis_bytes / events:,.0f}",
        pg_bytes / redis_bytes,
    )


async def run(settings: Settings) -> Outcome:
    events = settings.count(100_000, 10_000)
    url = settings.redis_url
    prefix = unique_prefix("archive")
    try:
        out = await measure(url, prefix, events, settings.rounds)
    finally:
        await delete_prefix(url, prefix)
    prefix = unique_prefix("archive-handled")
    try:
        out.rows.append(await handled_sizes(url, prefix, 10_000 if not settings.quick else 2_000))
    finally:
        await delete_prefix(url, prefix)
    prefix = unique_prefix("archive-random")
    try:
        out.rows.append(
            await handled_sizes(url, prefix, 10_000 if not settings.quick else 2_000, random=True)
        )
    finally:
        await delete_prefix(url, prefix)
    out.notes.append(
        "archive: the benchmark's Ping bodies are one repeated character, which lz4 "
        "compresses far better than real payloads; the random-body row bounds the other "
        "side. PostgreSQL's read_journal decodes with the garbage collector paused (Redis's "
        "journal.records() does not), part of its lead."
    )
    return out


if __name__ == "__main__":  # pragma: no cover - a manual entry point
    print(asyncio.run(run(Settings())))
