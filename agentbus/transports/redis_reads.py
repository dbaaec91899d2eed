"""Reading a batch of new entries as one packed reply (the Redis transport's hot read).

redis-py parses replies in pure Python, one call chain per element, and an
``XREADGROUP`` reply has five elements per entry (the entry, its id, its field list,
the field name, the value). Under load that parsing is the largest single cost of a
consumer, agentbus or not. :data:`READ_SCRIPT` runs the same ``XREADGROUP … >`` inside
Redis and packs each stream's entries into three strings: a header of ids and payload
lengths, the payloads back to back, and (rarely) the entries that are not plain agentbus
events, passed through as they are. Same group semantics (pending list, delivery count,
last-delivered id): it is the same command.

Scripts cannot block, so the transport reads this way first and falls back to a
blocking ``XREADGROUP`` only when nothing is waiting.

Blocking reads on a Redis Cluster go through :func:`blocking_read`, which sends them to
the primary of their slot itself instead of letting redis-py 8.1's cluster client route
them. Three things in that client (read in its source) made multi-slot subscriptions
stall for the blocking client's socket timeout (30 s):

- a command issued before the client's first topology read (``_initialize``) finds no
  default node, so it gets the keyless policy and goes to a random primary; the per-slot
  reads of a new subscription are exactly such commands, several at once, and most come
  back MOVED;
- every ``reinitialize_steps``-th MOVED (5 by default) makes the client ``aclose()``
  itself: every connection of every node is closed, including the blocking reads other
  slots have in flight ("Connection closed by server", and a read whose connection was
  being reopened at that moment waited for the socket timeout);
- a key position that is not fixed (XREAD, XREADGROUP) costs a ``COMMAND GETKEYS`` round
  trip before each command.

So the blocking client never reinitialises on MOVED (``reinitialize_steps`` 0: a MOVED
patches the slot cache, as redis-py does on the other steps), it is initialised before
a command is routed, and the node comes from the slot cache (``target_nodes=``). MOVED
and ASK are still followed by redis-py (it re-reads the key's slot then, the one case
that pays for ``COMMAND GETKEYS``); after a connection error or a slot no node serves,
the topology is re-read and the read sent once more (reads are idempotent: entries a
lost reply delivered stay pending and are claimed later).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .base import EVENT_FIELD, Delivery
from .redis_errors import REROUTE_ERRORS
from .redis_outbox import Script, run_scripts

if TYPE_CHECKING:
    from .redis_client import RedisClient

__all__ = ["READ", "READ_SCRIPT", "SlotReads", "blocking_read", "unpack_read"]

# KEYS: the topic streams. ARGV: group, consumer, count.
# Reply: per stream with entries {key, header, payloads, odd}. The header holds, per
# entry in stream order, "<id> <payload length>", or "<id> -1" for an entry whose fields
# are not exactly the event field; those entries are in odd, in order, as XREADGROUP
# returned them.
READ_SCRIPT = f"""
local cmd = {{'XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS'}}
for i = 1, #KEYS do cmd[#cmd + 1] = KEYS[i] end
for i = 1, #KEYS do cmd[#cmd + 1] = '>' end
local reply = redis.call(unpack(cmd))
local out = {{}}
if not reply then return out end
for _, stream in ipairs(reply) do
  local head, payloads, odd = {{}}, {{}}, {{}}
  for _, entry in ipairs(stream[2]) do
    local fields = entry[2]
    if #fields == 2 and fields[1] == '{EVENT_FIELD}' then
      head[#head + 1] = entry[1] .. ' ' .. #fields[2]
      payloads[#payloads + 1] = fields[2]
    else
      head[#head + 1] = entry[1] .. ' -1'
      odd[#odd + 1] = entry
    end
  end
  out[#out + 1] = {{stream[1], table.concat(head, ' '), table.concat(payloads), odd}}
end
return out
"""


def unpack_read(reply: Any, topic_of: Callable[[str], str]) -> list[Delivery]:
    """Deliveries from a :data:`READ_SCRIPT` reply, in stream order."""
    out: list[Delivery] = []
    for key, head, payloads, odd in reply or ():
        topic = topic_of(key.decode())
        parts = head.split()
        pos = 0
        odd_entries = iter(odd)
        for i in range(0, len(parts), 2):
            size = int(parts[i + 1])
            if size >= 0:
                end = pos + size
                out.append(Delivery(topic, parts[i].decode(), payloads[pos:end]))
                pos = end
                continue
            raw_id, flat = next(odd_entries)
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            out.append(
                Delivery(
                    topic,
                    raw_id.decode(),
                    fields.get(_EVENT_KEY),
                    raw_fields=fields,  # names decoded only if a dead letter needs them
                )
            )
    return out


_EVENT_KEY = EVENT_FIELD.encode()


READ = Script.of(READ_SCRIPT)


async def blocking_read(
    client: RedisClient,
    streams: Mapping[str, str],
    *,
    count: int | None,
    block: int | None,
    group: tuple[str, str] | None = None,
) -> Any:
    """``XREADGROUP GROUP group[0] group[1]`` (else ``XREAD``) of ``streams`` (stream key
    to id; all in one hash slot) on the blocking client, with redis-py's reply.

    On a cluster the command goes to the primary of the streams' slot (see the module
    docstring for why redis-py does not route it).
    """
    blocking = client.blocking
    if not client.cluster:
        if group is None:
            return await blocking.xread(dict(streams), count=count, block=block)
        return await blocking.xreadgroup(*group, dict(streams), count=count, block=block)
    pieces: list[Any] = [b"GROUP", *group] if group is not None else []
    if count is not None:
        pieces += [b"COUNT", str(count)]
    if block is not None:
        pieces += [b"BLOCK", str(block)]
    pieces += [b"STREAMS", *streams.keys(), *streams.values()]
    command = "XREADGROUP" if group is not None else "XREAD"
    key = next(iter(streams))
    # A MOVED must not make the client close every connection (reads of other slots
    # in flight on them): the slot cache is patched instead (see the module docstring).
    blocking.reinitialize_steps = 0
    for attempt in (1, 2):
        try:
            if blocking._initialize:  # else the command would go to a random node
                await blocking.initialize()
            node = blocking.get_node_from_key(key)
            return await blocking.execute_command(command, *pieces, target_nodes=node)
        except REROUTE_ERRORS:
            # A connection error has already marked the topology for a re-read.
            if attempt == 2 or client.closed:
                raise
            if not blocking._initialize:
                await blocking.nodes_manager.initialize()
    raise AssertionError("unreachable")


class SlotReads:
    """Reads of one consumer over topics in several hash slots.

    One ``XREADGROUP`` (or script) may only name streams of one slot on a cluster, so the
    topics are read per slot: first what is waiting, packed (:data:`READ_SCRIPT`, one call
    per slot, all in one round trip); when nothing is, one blocking ``XREADGROUP`` per
    slot, returning as soon as the first answers. The others keep running: cancelling
    one would lose its reply (the entries it read would sit pending until claimed), so
    their deliveries are returned by the reader's next call, whichever topics it names
    (so a reader with a read left running reads through here even over one slot). Only
    :meth:`aclose` (and deleting the group) cancels them.

    Every read task's outcome is consumed: by the call that takes its deliveries (its
    error is raised, or dropped when another slot returned deliveries), else by a done
    callback (a task cancelled by :meth:`forget`, or one whose reader stopped calling),
    so asyncio never reports an exception that was never retrieved. :meth:`aclose`
    cancels the tasks and waits for them.
    """

    def __init__(
        self,
        client: RedisClient,
        topic_of: Callable[[str], str],
        deliveries: Callable[[Any], list[Delivery]],
    ) -> None:
        self._c = client
        self._topic_of = topic_of
        self._deliveries = deliveries
        #: Per (group, consumer): the blocking reads in flight, by their stream keys.
        self._inflight: dict[tuple[str, str], dict[tuple[str, ...], asyncio.Task[Any]]] = {}

    async def read(
        self,
        group: str,
        consumer: str,
        slots: Sequence[Sequence[str]],
        *,
        count: int,
        block: int | None,
    ) -> list[Delivery]:
        """New entries of the streams ``slots`` (stream keys grouped by slot)."""
        inflight = self._inflight.setdefault((group, consumer), {})
        out = self._take_done(inflight)
        if out:
            return out
        calls = [(READ, list(keys), [group, consumer, count]) for keys in slots]
        for result in await self._c.call(lambda: run_scripts(self._c, calls, wait=False)):
            if isinstance(result, Exception):
                raise (
                    self._c.translate(result) if isinstance(result, self._c.redis_error) else result
                )
            out.extend(unpack_read(result, self._topic_of))
        if out or block is None:
            return out
        for keys in slots:
            if tuple(keys) not in inflight:
                streams = dict.fromkeys(keys, ">")

                async def blocking(streams: dict[str, str] = streams) -> Any:
                    return await blocking_read(
                        self._c, streams, count=count, block=block, group=(group, consumer)
                    )

                task = asyncio.get_running_loop().create_task(self._c.call(blocking))
                task.add_done_callback(_consume)
                inflight[tuple(keys)] = task
        await asyncio.wait(list(inflight.values()), return_when=asyncio.FIRST_COMPLETED)
        return self._take_done(inflight)

    def in_flight(self, group: str, consumer: str) -> set[str]:
        """The topics with a blocking read of this reader not returned yet (running, or
        done and waiting for the reader's next call)."""
        inflight = self._inflight.get((group, consumer))
        if not inflight:
            return set()
        return {self._topic_of(key) for keys in inflight for key in keys}

    def _take_done(self, inflight: dict[tuple[str, ...], asyncio.Task[Any]]) -> list[Delivery]:
        out: list[Delivery] = []
        error: BaseException | None = None
        for keys, task in list(inflight.items()):
            if not task.done():
                continue
            del inflight[keys]
            if task.cancelled():
                continue
            exc = task.exception()
            if exc is not None:
                error = error or exc
            else:
                out.extend(self._deliveries(task.result()))
        if error is not None and not out:
            raise error
        return out

    def forget(self, group: str | None = None) -> None:
        """Cancel the blocking reads of ``group`` (all groups: ``None``): the group was
        deleted, or the transport is closing."""
        for reader in [r for r in self._inflight if group is None or r[0] == group]:
            for task in self._inflight.pop(reader).values():
                task.cancel()  # (its outcome is consumed by _consume)

    async def aclose(self, timeout: float = 1.0) -> None:
        """Cancel every blocking read and wait (up to ``timeout`` s) until they ended."""
        tasks = [t for reads in self._inflight.values() for t in reads.values()]
        self.forget()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)


def _consume(task: asyncio.Task[Any]) -> None:
    """Mark a read task's outcome retrieved (the reader takes it, or no one wants it)."""
    if not task.cancelled():
        task.exception()
