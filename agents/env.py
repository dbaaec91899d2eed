"""Pick the model client the environment asks for: OpenAI(-compatible) or offline.

Kept apart from :mod:`agents.model` (the types every client imports) so that the clients
need not be imported by the module that defines what they implement.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from agentbus.agents.model import DEFAULT_MODEL
from agentbus.agents.offline import OfflineModel

if TYPE_CHECKING:
    from agentbus.agents.openai_model import OpenAIChatModel

__all__ = ["model_from_env"]


def model_from_env() -> OpenAIChatModel | OfflineModel:
    """Build the model client the environment asks for.

    An :class:`~agents.openai_model.OpenAIChatModel` when ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``
    or ``AGENTBUS_MODEL_URL`` is set (``AGENTBUS_MODEL_URL`` wins over ``OPENAI_BASE_URL``);
    otherwise, or when ``AGENTBUS_MODEL`` is ``offline``, an
    :class:`~agents.offline.OfflineModel`. The model name comes from ``AGENTBUS_MODEL``, else
    ``OPENAI_MODEL``, else :data:`DEFAULT_MODEL`.

    Raises :class:`agentbus.errors.UsageError` when the configuration is invalid.
    """
    env = os.environ
    name = env.get("AGENTBUS_MODEL") or env.get("OPENAI_MODEL") or DEFAULT_MODEL
    if name in ("offline", OfflineModel.name):
        return OfflineModel()
    base_url = env.get("AGENTBUS_MODEL_URL") or env.get("OPENAI_BASE_URL")
    api_key = env.get("OPENAI_API_KEY")
    if not (base_url or api_key):
        return OfflineModel()
    # Imported here, not at the top: the OpenAI client loads the SDK (most of a second),
    # which an offline run should not pay for.
    from agentbus.agents.openai_model import OpenAIChatModel

    return OpenAIChatModel(name, base_url=base_url, api_key=api_key)
