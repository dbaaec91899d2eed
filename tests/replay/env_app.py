"""An LLM workflow whose model comes from the environment (``OPENAI_*``), for replay tests.

Recorded against an OpenAI-compatible server, it must replay with no model configured.
"""

from __future__ import annotations

from agentbus import App, Run
from agentbus.agents import LLMAgent, Prompt, Reply


def city_weather(city: str) -> str:
    """Today's weather in a city.

    Args:
        city: The city's name.
    """
    return f"{city}: rain, 14 C"


app = App(
    "env-qa",
    [
        # No model given: model_from_env() picks OpenAI when OPENAI_* is set, else offline.
        lambda: LLMAgent(
            name="assistant", system_prompt="Be brief.", tools=[city_weather], topic="env.ask"
        )
    ],
)


@app.main
async def main(run: Run) -> list[str]:
    answers = []
    for text in ("What is the weather in Paris?", "And in Oslo?"):
        reply: Reply = await run.request("env.ask", Prompt(text=text), expect=Reply)
        answers.append(f"{reply.model}: {reply.text}")
    return answers
