"""The archiver as a process of its own, for the SIGKILL test (test_archive_crash.py).

``python archive_app.py REDIS_URL ARCHIVE_URL [--batch N] [--pause-after-store K]``
archives every finished run older than ``--older-than`` seconds from Redis into the
PostgreSQL archive, printing (flushed at once) ``stored <run>`` when the archive
committed a run and ``dropped <run>`` when Redis deleted it, so the test knows where to
kill it; ``report <json>`` at the end. ``--pause-after-store K`` stops for good right
after the K-th commit (before its verification and delete): a kill point held still.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

from agentbus.archive import archive_runs
from agentbus.transports import RunInfo, open_transport
from agentbus.transports.archive_format import ArchiveChunk, RunSummary
from agentbus.transports.postgres_archive import PostgresArchive


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Told:
    """The archive, saying what it committed (and pausing after the ``pause``-th)."""

    def __init__(self, archive: Any, pause: int | None) -> None:
        self._archive = archive
        self._pause = pause
        self._stored = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._archive, name)

    async def store_run(
        self, run: RunInfo, chunks: Sequence[ArchiveChunk], summary: RunSummary, checksum: str
    ) -> None:
        await self._archive.store_run(run, chunks, summary, checksum)
        self._stored += 1
        say(f"stored {run.run_id}")
        if self._stored == self._pause:
            say(f"paused {run.run_id}")
            await asyncio.Event().wait()  # until killed


class Dropping:
    """The hot store, saying what it deleted."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def drop_run(self, run_id: str, *, mark: str) -> bool:
        dropped: bool = await self._store.drop_run(run_id, mark=mark)
        say(f"{'dropped' if dropped else 'kept'} {run_id}")
        return dropped


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("redis_url")
    parser.add_argument("archive_url")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--older-than", type=float, default=3600.0)
    parser.add_argument("--pause-after-store", type=int, default=None)
    args = parser.parse_args()
    transport = open_transport(args.redis_url)
    archive = PostgresArchive(args.archive_url)
    await transport.connect()
    await archive.connect()
    try:
        report = await archive_runs(
            Dropping(transport.store),
            Told(archive, args.pause_after_store),
            older_than=args.older_than,
            batch=args.batch,
        )
        say("report " + json.dumps(report.to_dict()))
    finally:
        await archive.aclose()
        await transport.aclose()


if __name__ == "__main__":
    asyncio.run(main())
