"""Decoding a delivery, and wording why it failed, for the read loop.

Every failure here ends one entry in the dead-letter stream and nothing else: whatever
decoding or verifying raised, a ``DecodeError`` with its own reason or any other
exception (a signer that chokes on a non-ASCII signature, a validator raising what
pydantic does not wrap).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from .envelope import Envelope, decode_data
from .errors import DecodeError, SignatureError
from .message import Message
from .redact import redact_text
from .signing import Signer
from .transports import Delivery

__all__ = ["Decoder", "failure", "worded"]

#: An error text longer than this is cut in dead letters and the journal.
_MAX_ERROR_CHARS = 2000


def failure(reason: str, exc: Exception) -> tuple[str, str]:
    """The dead-letter reason and error for ``exc``: a DecodeError words its own."""
    if isinstance(exc, DecodeError):
        return exc.reason, str(exc)
    return reason, redact_text(f"{type(exc).__name__}: {exc}")[:_MAX_ERROR_CHARS]


def worded(env: Envelope, cls: type[Message], exc: Exception) -> Exception:
    """A validation error as the DecodeError that words it (field by field)."""
    if isinstance(exc, ValidationError):
        try:
            decode_data(env, cls)
        except DecodeError as precise:
            return precise
        except Exception:
            pass
    return exc


@dataclass(frozen=True, slots=True)
class Decoder:
    """Turns a delivery into a verified envelope: the size limit, then the signature."""

    max_event_bytes: int
    signer: Signer | None

    def try_decode(self, d: Delivery, topic: str | None = None) -> Envelope | None:
        """``d`` decoded and verified, or ``None`` when that fails (for filing a record)."""
        try:
            return self.decode(d, topic)
        except Exception:
            return None

    def decode(self, d: Delivery, topic: str | None = None) -> Envelope:
        """``d``'s envelope, size-checked, parsed and verified. Raises ``DecodeError``, or
        ``SignatureError`` whatever verifying raised; anything else parsing raised passes.

        ``topic``: the topic the entry's stream carries, when not the stream itself (a
        partition stream ``orders#3`` carries ``orders``: what the event was signed for).
        """
        if d.payload is None:
            fields = ", ".join(sorted(d.fields)) or "none"
            raise DecodeError(
                "not an agentbus event", f"the entry has no 'e' field (fields: {fields})"
            )
        if len(d.payload) > self.max_event_bytes:
            raise DecodeError(
                "event too large",
                f"{len(d.payload)} bytes; the limit is {self.max_event_bytes} "
                "(Runtime(max_event_bytes=))",
            )
        env = Envelope.decode(d.payload)
        if topic is None:
            topic = d.topic
        if self.signer is not None:
            self._verify(env, topic)
        if env.topic is None:
            env.topic = topic
        return env

    def _verify(self, env: Envelope, topic: str) -> None:
        assert self.signer is not None
        try:
            # Before anything trusts a single attribute of it; the signed topic must be
            # the stream it was read from (a captured event copied elsewhere is refused).
            self.signer.verify(env, topic=topic)
        except DecodeError:
            raise
        except Exception as exc:  # whatever verifying it raised, it is not verified
            raise SignatureError(
                "bad signature", f"verifying it failed: {type(exc).__name__}: {exc}"
            ) from exc
