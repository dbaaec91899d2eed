"""Schema evolution end to end: v1 senders, v2 consumers, replay and check-compat.

Two versions of one app (``evolution/shop_v1.py``, ``evolution/shop_v2.py``) share type
names, so each runs in its own process, as two deployments would: the CLI records a run
under v1, then v2 code replays it (identical, thanks to the upcaster), check-compat passes,
and without the upcaster check-compat fails naming the type and both versions. In
process: a v2 consumer handles a v1 event an older sender published, and a v1 event with
no upcaster is dead-lettered with the reason, the runtime running on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agentbus import Agent, Context, Envelope, Message, Runtime, handle, upcaster
from agentbus.testing import wait_for
from agentbus.testing.workers import run_cli

HERE = Path(__file__).parent / "evolution"
V1 = str(HERE / "shop_v1.py")
V2 = str(HERE / "shop_v2.py")


def _ok(done: Any) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return str(done.stdout)


def test_a_v1_run_replays_identically_under_v2_code_and_check_compat_gates(
    tmp_path: Path,
) -> None:
    recorded = json.loads(_ok(run_cli("run", V1, "--json", cwd=tmp_path)))
    assert recorded["result"] == "A-1: 1250 cents"
    run_id = recorded["run_id"]

    replayed = run_cli("replay", run_id, "--app", V2, cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "identical" in replayed.stdout

    fits = json.loads(_ok(run_cli("check-compat", V2, "--json", cwd=tmp_path)))
    assert fits["ok"] is True
    assert fits["misfits"] == []
    # The v1 run and its replay: each a refund (the v1 one upcast) and its reply.
    assert (fits["runs"], fits["fitting"], fits["events"]) == (2, 4, 4)

    broken = run_cli("check-compat", V2, cwd=tmp_path, env={"EVO_NO_UPCASTER": "1"})
    assert broken.returncode == 1
    assert "NOT compatible" in broken.stdout
    assert "no upcaster" in broken.stdout
    assert "evo.Refund: the event is version 1, this code's is version 2" in broken.stdout

    # A run recorded by v2 does not fit v1 code: a newer version than the reader's.
    newer = json.loads(_ok(run_cli("run", V2, "--json", cwd=tmp_path)))
    old_code = run_cli("check-compat", V1, "--run", newer["run_id"], "--json", cwd=tmp_path)
    assert old_code.returncode == 1
    (misfit,) = json.loads(old_code.stdout)["misfits"]
    assert misfit["reason"] == "newer data version"


class Note(Message, type="evo.Note", version=3):
    text: str
    words: int


@upcaster("evo.Note", from_version=1)
def _v1(data: dict[str, Any]) -> dict[str, Any]:
    return {"body": data["text"]}


@upcaster("evo.Note", from_version=2)
def _v2(data: dict[str, Any]) -> dict[str, Any]:
    return {"text": data["body"], "words": len(data["body"].split())}


class Orphan(Message, type="evo.Orphan", version=2):
    text: str


class Reader(Agent, name="evo-reader"):
    def __init__(self) -> None:
        super().__init__()
        self.notes: list[Note] = []
        self.orphans: list[Orphan] = []

    @handle("evo.notes")
    async def on_note(self, note: Note, ctx: Context) -> None:
        self.notes.append(note)

    @handle("evo.orphans")
    async def on_orphan(self, orphan: Orphan, ctx: Context) -> None:
        self.orphans.append(orphan)


async def test_a_v3_consumer_handles_older_events_and_dead_letters_one_it_cannot_upcast(
    url_for: str,
) -> None:
    reader = Reader()
    async with Runtime(url_for, block_ms=50) as rt:
        rt.add(reader)
        await rt.ready()
        # What older senders put on the wire: no dataversion (1), and dataversion 2.
        await rt.publish_envelope(
            "evo.notes", Envelope(type="evo.Note", source="old", data={"text": "a b c"})
        )
        v2 = Envelope(type="evo.Note", source="old", data={"body": "d e"})
        v2.extensions["dataversion"] = 2
        await rt.publish_envelope("evo.notes", v2)
        await rt.publish("evo.notes", Note(text="now", words=1))
        await rt.publish_envelope(
            "evo.orphans", Envelope(type="evo.Orphan", source="old", data={"text": "x"})
        )

        async def handled() -> bool:
            return len(reader.notes) == 3

        await wait_for(handled, timeout=10, message="three notes handled")

        async def dead() -> bool:
            return bool(await rt.transport.admin.dead_letters("evo.orphans"))

        await wait_for(dead, timeout=10, message="the orphan dead-lettered")
        (letter,) = await rt.transport.admin.dead_letters("evo.orphans")
        await rt.publish("evo.notes", Note(text="still running", words=2))

        async def four() -> bool:
            return len(reader.notes) == 4

        await wait_for(four, timeout=10, message="the runtime runs on")
    assert [(n.text, n.words) for n in reader.notes] == [
        ("a b c", 3),
        ("d e", 2),
        ("now", 1),
        ("still running", 2),
    ]
    assert reader.orphans == []
    assert letter.reason == "no upcaster"
    assert "evo.Orphan: the event is version 1, this code's is version 2" in letter.error
