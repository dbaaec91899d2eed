"""Run the agentbus CLI with every Redis command checked for hash-slot correctness.

``python slot_probe.py OUT.jsonl agentbus-args…``: patches redis-py's command packing so
that every atomic unit sent to Redis (a script call, a ``MULTI`` … ``EXEC`` block with
the keys ``WATCH``ed before it, a multi-stream ``XREADGROUP``/``XREAD``, a multi-key
``DEL``/``UNLINK``/``EXISTS``) is checked: all its keys must hash to one slot, as Redis
Cluster requires. Each unit is written to OUT as a JSON line ``{"cmd", "slots"}``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.crc import key_slot

KEYLESS = {
    "MULTI", "EXEC", "DISCARD", "UNWATCH", "PING", "INFO", "SCAN", "SCRIPT", "CLIENT",
    "HELLO", "SELECT", "AUTH", "TIME", "WAIT", "CLUSTER", "COMMAND", "ECHO", "READONLY",
}  # fmt: skip
MULTI_KEY = {"DEL", "UNLINK", "EXISTS", "WATCH", "MGET", "TOUCH"}

_out: Any = None


def _b(x: Any) -> bytes:
    return x if isinstance(x, bytes) else str(x).encode()


def keys_of(args: tuple[Any, ...]) -> list[bytes]:
    name = _b(args[0]).decode().upper()
    if name in ("EVAL", "EVALSHA"):
        n = int(args[2])
        return [_b(k) for k in args[3 : 3 + n]]
    if name in ("XREADGROUP", "XREAD"):
        upper = [_b(a).upper() for a in args]
        at = upper.index(b"STREAMS") + 1
        rest = args[at:]
        return [_b(k) for k in rest[: len(rest) // 2]]
    if name in MULTI_KEY:
        return [_b(k) for k in args[1:]]
    if name in KEYLESS or len(args) < 2:
        return []
    return [_b(args[1])]


def report(unit: str, keys: list[bytes]) -> None:
    if len(keys) < 2:
        return
    slots = sorted({key_slot(k) for k in keys})
    _out.write(json.dumps({"cmd": unit, "slots": slots, "keys": [k.decode() for k in keys]}))
    _out.write("\n")
    _out.flush()


_pack_command = AbstractConnection.pack_command


def pack_command(self: Any, *args: Any) -> Any:
    # Pipelines pack their commands one by one through here too, so one state per
    # connection follows WATCH … MULTI … EXEC.
    name = _b(args[0]).decode().upper()
    keys = keys_of(args)
    block = getattr(self, "_probe_block", None)
    if name == "WATCH":
        self._probe_watched = keys
    elif name in ("UNWATCH", "DISCARD"):
        self._probe_watched, self._probe_block = [], None
    elif name == "MULTI":
        self._probe_block = list(getattr(self, "_probe_watched", []))
    elif name == "EXEC":
        report("MULTI", block or [])
        self._probe_watched, self._probe_block = [], None
    else:
        if block is not None:
            block.extend(keys)
        report(name, keys)
    return _pack_command(self, *args)


def main() -> int:
    global _out
    _out = open(sys.argv[1], "a")  # noqa: SIM115
    AbstractConnection.pack_command = pack_command  # type: ignore[method-assign]
    from agentbus.cli import main as cli

    return cli(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
