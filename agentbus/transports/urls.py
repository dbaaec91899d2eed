"""URL handling shared by the transports: redaction of secrets (see :mod:`agentbus.redact`)."""

from __future__ import annotations

from ..redact import redact_url

__all__ = ["redact_url"]
