"""A small LLM workflow used by the replay tests (offline model, sequential model calls)."""

from __future__ import annotations

from agentbus import Agent, App, Context, Message, Run, handle
from agentbus.agents import ChatModel, LLMAgent, OfflineModel, Prompt, Reply


class Study(Message, type="qa.Study"):
    subjects: list[str]


class Note(Message, type="qa.Note"):
    subject: str
    text: str


class Notes(Message, type="qa.Notes"):
    notes: list[Note]


class Coordinator(Agent, name="coordinator"):
    @handle("qa.study")
    async def study(self, job: Study, ctx: Context) -> Notes:
        notes = []
        for subject in job.subjects:  # one after the other: the order is deterministic
            reply: Reply = await ctx.request(
                "qa.ask", Prompt(text=f"Explain {subject}"), expect=Reply
            )
            note = Note(subject=subject, text=reply.text)
            await ctx.publish("qa.notes", note)
            notes.append(note)
        return Notes(notes=notes)


def build(model: ChatModel | None = None, system_prompt: str = "Be brief.") -> App:
    app = App(
        "qa",
        [
            Coordinator,
            lambda: LLMAgent(
                name="assistant",
                model=model or OfflineModel(),
                system_prompt=system_prompt,
                topic="qa.ask",
            ),
        ],
    )

    @app.main
    async def main(run: Run) -> Notes:
        notes: Notes = await run.request(
            "qa.study", Study(subjects=["tides", "eclipses"]), expect=Notes
        )
        return notes

    return app


app = build()
