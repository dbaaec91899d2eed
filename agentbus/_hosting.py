"""The subscriptions of the agents a runtime hosts, and the tasks that watch them.

One lease task renews the leases of long handlers so no other consumer claims them;
one watchdog interrupts handler attempts past their timeout; one poll cancels the
handlers of a run cancelled elsewhere (see :mod:`agentbus._cancel`). One of each per runtime,
not per subscription: a task per hosted agent instance would cost memory.
"""

from __future__ import annotations

import asyncio
import logging

from ._cancel import Cancels
from ._delivery import Services
from ._subscription import Subscription, plan
from ._supervise import supervise
from .agent import Agent
from .transports import Transport

__all__ = ["Hosting"]

log = logging.getLogger("agentbus.runtime")


class Hosting:
    """Subscribes agents, renews their leases, enforces their timeouts, unsubscribes."""

    def __init__(self) -> None:
        self.subs: list[Subscription] = []
        self.lease_task: asyncio.Task[None] | None = None
        self.watchdog_task: asyncio.Task[None] | None = None
        self.cancels_task: asyncio.Task[None] | None = None
        self._lease_period = 1.0

    def start(self, visibility_timeout: float) -> None:
        self._lease_period = max(visibility_timeout / 3, 0.05)
        self.lease_task = supervise(self._leases, "agentbus-leases")
        self.watchdog_task = supervise(self._watchdog, "agentbus-watchdog")

    def watch_cancels(self, cancels: Cancels, transport: Transport) -> None:
        """Cancel this process's handlers of runs cancelled here or anywhere else."""
        if self.cancel_run not in cancels.listeners:  # started again after a stop
            cancels.listeners.append(self.cancel_run)
        active = lambda: {r for sub in self.subs for r in sub.active_runs()}  # noqa: E731
        self.cancels_task = supervise(
            lambda: cancels.poll(transport.store, active), "agentbus-cancels"
        )

    def cancel_run(self, run_id: str) -> None:
        """Cancel the handlers of ``run_id`` in progress here."""
        for sub in self.subs:
            sub.cancel_run(run_id)

    async def host(self, services: Services, agent: Agent) -> None:
        """Subscribe ``agent``: one consumer group per subscription mode."""
        by_mode, from_start = plan(agent)
        consumer = services.settings.consumer
        for mode, handlers in by_mode.items():
            group = agent.name if mode == "shared" else f"{agent.name}:{consumer}"
            partitions = {}
            for topic in sorted({t for t, _ in handlers}):
                count = await services.partitions.count(topic)
                if count:
                    partitions[topic] = count
            # Two replicas in one runtime share partitions as two members.
            twins = sum(1 for s in self.subs if s.group == group)
            member = consumer if not twins else f"{consumer}/{twins}"
            sub = Subscription(
                services, agent, group, mode, handlers, from_start[mode], partitions, member
            )
            await sub.start()
            self.subs.append(sub)

    @property
    def inflight(self) -> bool:
        """Whether a delivery is queued or being handled."""
        return any(s.inflight for s in self.subs)

    def broadcasting(self) -> set[str]:
        """The names of the agents with a broadcast subscription here."""
        return {sub.agent.name for sub in self.subs if sub.mode == "broadcast"}

    def broadcast_groups(self) -> list[tuple[str, str]]:
        """The (topic, group) pairs of this instance's own (broadcast) groups."""
        return [(t, s.group) for s in self.subs if s.mode == "broadcast" for t in s.topics]

    def owned(self, inbox: tuple[str, str] | None) -> tuple[list[tuple[str, str]], str | None]:
        """What another process must delete if this one dies: its broadcast groups and
        its reply inbox (``inbox``: the requests' (inbox, last read), or ``None``)."""
        return self.broadcast_groups(), None if inbox is None else inbox[0]

    def shared_agents(self) -> list[str]:
        """The agents with a shared subscription here (whose parked questions this
        process may wake up)."""
        return sorted({sub.agent.name for sub in self.subs if sub.mode == "shared"})

    def read_groups(self) -> list[tuple[str, str]]:
        """The (topic, consumer group) pairs read here."""
        return [(topic, sub.group) for sub in self.subs for topic in sub.topics]

    async def stop(self, grace: float) -> int:
        """Stop reading and watching; wait ``grace`` s for handlers. Returns how many
        were cancelled (their entries stay pending)."""
        for task in (self.lease_task, self.watchdog_task, self.cancels_task):
            if task is not None:
                task.cancel()
                await asyncio.wait([task], timeout=1.0)
        for sub in self.subs:
            sub.stop_reading()
        cancelled = 0
        for sub in self.subs:
            cancelled += await sub.finish(grace)
        return cancelled

    async def unsubscribe(self, transport: Transport) -> None:
        """Forget the subscriptions; remove broadcast groups (they were this instance's)."""
        for sub in self.subs:
            if sub.mode != "broadcast":
                continue
            for topic in sub.topics:
                try:
                    await transport.delete_group(topic, sub.group)
                except Exception as exc:
                    log.debug("could not remove broadcast group %s: %s", sub.group, exc)
        self.subs.clear()

    async def _leases(self) -> None:
        period = self._lease_period
        while True:
            await asyncio.sleep(period)
            for sub in list(self.subs):
                if sub.inflight:
                    await sub.renew_leases(older_than=period)

    async def _watchdog(self) -> None:
        """Interrupt handler attempts past their timeout, a few times per shortest one."""
        loop = asyncio.get_running_loop()
        period = 1.0
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            period = 1.0  # at most this late; shorter for short timeouts
            for sub in self.subs:
                if sub.shortest_timeout is not None:
                    period = min(period, max(sub.shortest_timeout / 10, 0.05))
                if sub.deadlines:
                    sub.expire(now)
