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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import EVENT_FIELD, Delivery

__all__ = ["READ_SCRIPT", "unpack_read"]

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
