"""Signed envelopes: HMAC-SHA256 with key ids, so keys can rotate.

A :class:`Signer` holds secret keys by id and signs with the ``active`` one. The
signature covers the canonical JSON of the whole envelope (sorted keys, no spaces,
UTF-8) except the ``sig`` attribute itself, so the key id, the type, the routing
attributes and the data are all protected. It travels in two CloudEvents extension
attributes (lowercase alphanumerics, as the spec requires)::

    "sigkid": "k2",                       the id of the key that signed
    "sig": "3q2-7w...",                   base64url HMAC-SHA256, no padding

A runtime with a signer signs everything it publishes and dead-letters every event it
receives that is unsigned, signed with an unknown key or altered, with the reason
``bad signature``; such events never reach a handler. To rotate: add the new key to
every process, then make it the active one, then drop the old one.

Routing and freshness: the signed ``topic`` must be the stream the event was read from
(else ``topic mismatch``: a captured event copied into another topic is refused), and a
signer with ``max_age`` refuses events whose signed ``time`` is older than that many
seconds (``event too old``) or that far in the future (``event time in the future``).

Journal records: the runtime's transport signs every record it writes
(:meth:`Signer.sign_record`, applied where records are serialised); the signature
covers the record, its embedded event and the run id, so a record cannot be altered,
forged by a journal writer without the key, or moved to another run.
:meth:`Signer.verify_record` checks one; ``agentbus trace`` and replay check them all.

From the environment (``Signer.from_env``, which ``Runtime`` uses when no signer is
passed)::

    AGENTBUS_SIGNING_KEYS="k1:<base64 secret>,k2:<base64 secret>"
    AGENTBUS_SIGNING_KEY_ID="k2"          optional when there is one key
    AGENTBUS_SIGNING_MAX_AGE="300"        optional: seconds a signed event stays valid
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import os
import re
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from . import _json
from .envelope import Envelope
from .errors import SignatureError, UsageError

__all__ = ["KEY_ID_ATTR", "MIN_KEY_BYTES", "SIGNATURE_ATTR", "Signer", "unverified_records"]

SIGNATURE_ATTR = "sig"
KEY_ID_ATTR = "sigkid"
#: Shorter secrets are refused: HMAC-SHA256 wants at least 128 bits of key.
MIN_KEY_BYTES = 16
ENV_KEYS = "AGENTBUS_SIGNING_KEYS"
ENV_KEY_ID = "AGENTBUS_SIGNING_KEY_ID"
ENV_MAX_AGE = "AGENTBUS_SIGNING_MAX_AGE"
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
REASON = "bad signature"
TOPIC_MISMATCH = "topic mismatch"
TOO_OLD = "event too old"
FUTURE = "event time in the future"
#: Tags the bytes a record signature covers, so it can never pass for an event's.
_RECORD_TAG = "agentbus.record.v1"


def canonical_bytes(env: Envelope) -> bytes:
    """The bytes a signature covers: the envelope's JSON minus ``sig``, keys sorted."""
    obj = env.to_dict()
    obj.pop(SIGNATURE_ATTR, None)
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class Signer:
    """Signs and verifies envelopes with HMAC-SHA256 keys identified by key ids.

    ``keys`` maps key ids to secrets (at least :data:`MIN_KEY_BYTES` bytes); every key
    verifies, ``active`` signs. ``max_age`` (seconds, default ``None``: no limit) makes
    :meth:`verify` refuse events signed longer ago than that (by their ``time``
    attribute); it must exceed the longest time an event may wait in a stream,
    retries included. Raises :class:`UsageError` for a bad key set or ``max_age``; the
    secrets never appear in its messages or its ``repr``.
    """

    def __init__(
        self, keys: Mapping[str, bytes], active: str, *, max_age: float | None = None
    ) -> None:
        if not keys:
            raise UsageError("a Signer needs at least one key")
        for kid, secret in keys.items():
            if not _KEY_ID.match(kid):
                raise UsageError(
                    f"signing key ids are 1-64 letters, digits, '.', '_' or '-', got {kid!r}"
                )
            if not isinstance(secret, bytes) or len(secret) < MIN_KEY_BYTES:
                raise UsageError(
                    f"signing key {kid!r} must be at least {MIN_KEY_BYTES} bytes "
                    "(use 32 random bytes: python -c 'import os,base64;"
                    "print(base64.b64encode(os.urandom(32)).decode())')"
                )
        if active not in keys:
            raise UsageError(
                f"the active signing key {active!r} is not among the keys {sorted(keys)!r}"
            )
        if max_age is not None and not (
            isinstance(max_age, int | float) and math.isfinite(max_age) and max_age > 0
        ):
            raise UsageError(f"max_age must be a positive number of seconds, got {max_age!r}")
        self._keys = dict(keys)
        self.active = active
        self.max_age = max_age

    @property
    def key_ids(self) -> list[str]:
        """The ids of the keys that verify (sorted)."""
        return sorted(self._keys)

    def __repr__(self) -> str:
        age = "" if self.max_age is None else f", max_age={self.max_age!r}"
        return f"Signer(key_ids={self.key_ids!r}, active={self.active!r}{age})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Signer | None:
        """The signer configured by ``AGENTBUS_SIGNING_KEYS``/``_KEY_ID``/``_MAX_AGE``.

        ``None`` when ``AGENTBUS_SIGNING_KEYS`` is not set.

        Raises :class:`UsageError` when the variables are malformed.
        """
        env = os.environ if environ is None else environ
        spec = env.get(ENV_KEYS, "").strip()
        if not spec:
            return None
        keys: dict[str, bytes] = {}
        for n, item in enumerate(part.strip() for part in spec.split(",")):
            kid, sep, encoded = item.partition(":")
            if not sep or not kid:
                raise UsageError(
                    f"{ENV_KEYS} entry {n + 1} must look like 'keyid:base64secret' "
                    f"(got an entry without a key id{'' if sep else ' or colon'})"
                )
            try:
                keys[kid] = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise UsageError(
                    f"{ENV_KEYS}: the secret of key {kid!r} is not valid base64"
                ) from None
        active = env.get(ENV_KEY_ID, "").strip()
        if not active:
            if len(keys) > 1:
                raise UsageError(
                    f"{ENV_KEYS} lists {len(keys)} keys; set {ENV_KEY_ID} to the one that signs"
                )
            active = next(iter(keys))
        max_age: float | None = None
        age = env.get(ENV_MAX_AGE, "").strip()
        if age:
            try:
                max_age = float(age)
            except ValueError:
                raise UsageError(
                    f"{ENV_MAX_AGE} must be a number of seconds, got {age!r}"
                ) from None
        return cls(keys, active, max_age=max_age)

    def _mac(self, kid: str, env: Envelope) -> str:
        digest = hmac.new(self._keys[kid], canonical_bytes(env), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(self, env: Envelope) -> None:
        """Sign ``env`` in place with the active key (replacing any old signature)."""
        env.extensions.pop(SIGNATURE_ATTR, None)
        env.extensions[KEY_ID_ATTR] = self.active
        env.extensions[SIGNATURE_ATTR] = self._mac(self.active, env)

    def verify(self, env: Envelope, *, topic: str | None = None, now: float | None = None) -> None:
        """Check ``env``'s signature, and where it was read from and how old it is.

        Raises :class:`SignatureError` with the reason ``bad signature`` when it is
        unsigned, names an unknown key, does not match (the event was altered, or signed
        with another secret) or cannot be checked at all (malformed attributes);
        ``topic mismatch`` when ``topic`` (the stream it was read from) is given and is
        not the signed ``topic``; with ``max_age``, ``event too old`` or ``event time
        in the future`` when its signed ``time`` is missing or more than ``max_age``
        seconds from ``now`` (default: this clock).
        """
        kid = env.extensions.get(KEY_ID_ATTR)
        sig = env.extensions.get(SIGNATURE_ATTR)
        if kid is None and sig is None:
            raise SignatureError(REASON, "the event is unsigned")
        if not isinstance(kid, str) or not isinstance(sig, str):
            raise SignatureError(REASON, f"both {KEY_ID_ATTR!r} and {SIGNATURE_ATTR!r} are needed")
        if kid not in self._keys:
            raise SignatureError(REASON, f"unknown signing key id {kid!r}")
        try:
            expected = self._mac(kid, env)
        except (ValueError, TypeError, RecursionError) as exc:  # e.g. a lone surrogate
            raise SignatureError(
                REASON, f"the event cannot be checked ({type(exc).__name__}: {exc})"
            ) from None
        if not hmac.compare_digest(expected.encode(), sig.encode("utf-8", "replace")):
            raise SignatureError(REASON, f"the signature does not match (key {kid!r})")
        if topic is not None and env.topic != topic:
            raise SignatureError(
                TOPIC_MISMATCH, f"signed for topic {env.topic!r} but read from {topic!r}"
            )
        if self.max_age is not None:
            self._check_age(env.time, time.time() if now is None else now)

    def _check_age(self, sent: str | None, now: float) -> None:
        assert self.max_age is not None
        try:
            stamp = datetime.fromisoformat(str(sent)).timestamp()
        except (ValueError, OverflowError, OSError):
            raise SignatureError(
                TOO_OLD, f"max_age={self.max_age!r}s needs a valid signed 'time', got {sent!r}"
            ) from None
        if now - stamp > self.max_age:
            raise SignatureError(
                TOO_OLD,
                f"signed at {sent}, {now - stamp:.1f}s ago; max_age is {self.max_age!r}s",
            )
        if stamp - now > self.max_age:
            raise SignatureError(
                FUTURE,
                f"signed at {sent}, {stamp - now:.1f}s ahead of this clock; "
                f"max_age is {self.max_age!r}s",
            )

    # -- journal records ---------------------------------------------------------------------
    def _record_mac(
        self, kid: str, run_id: str, rest: Mapping[str, Any], event: bytes | None
    ) -> str:
        # The compact JSON of the record as stored (key order included) minus its
        # signature and event, then the event's bytes: a record read back and dumped
        # again gives the same bytes, so the reader needs no copy of what was written.
        mac = hmac.new(self._keys[kid], _json.dumps([_RECORD_TAG, run_id, rest]), hashlib.sha256)
        if event is not None:
            mac.update(b"\n")
            mac.update(event)
        return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()

    def sign_record(
        self, run_id: str, record: Mapping[str, Any], raw_event: bytes | None = None
    ) -> dict[str, Any]:
        """A copy of journal ``record`` of run ``run_id`` signed with the active key.

        The signature (``sigkid``, ``sig``) covers every field, the event (``raw_event``,
        the encoded envelope stored under ``event``, or the record's own ``event``) and
        the run id. An old signature is replaced.
        """
        signed = {k: v for k, v in record.items() if k != KEY_ID_ATTR and k != SIGNATURE_ATTR}
        signed[KEY_ID_ATTR] = self.active
        event = raw_event
        if event is None and "event" in signed:
            event = _json.dumps(signed["event"])
        rest = (
            signed if "event" not in signed else {k: v for k, v in signed.items() if k != "event"}
        )
        signed[SIGNATURE_ATTR] = self._record_mac(self.active, run_id, rest, event)
        return signed

    def verify_record(self, run_id: str, record: Mapping[str, Any]) -> None:
        """Check the signature of a journal ``record`` read back from run ``run_id``.

        Raises :class:`SignatureError` (reason ``bad signature``) when it is unsigned,
        names an unknown key, was altered, forged or moved from another run.
        """
        kid = record.get(KEY_ID_ATTR)
        sig = record.get(SIGNATURE_ATTR)
        if kid is None and sig is None:
            raise SignatureError(REASON, "the record is unsigned")
        if not isinstance(kid, str) or not isinstance(sig, str):
            raise SignatureError(REASON, f"both {KEY_ID_ATTR!r} and {SIGNATURE_ATTR!r} are needed")
        if kid not in self._keys:
            raise SignatureError(REASON, f"unknown signing key id {kid!r}")
        rest = {k: v for k, v in record.items() if k != SIGNATURE_ATTR and k != "event"}
        try:
            event = _json.dumps(record["event"]) if "event" in record else None
            expected = self._record_mac(kid, run_id, rest, event)
        except (ValueError, TypeError, RecursionError) as exc:
            raise SignatureError(
                REASON, f"the record cannot be checked ({type(exc).__name__}: {exc})"
            ) from None
        if not hmac.compare_digest(expected.encode(), sig.encode("utf-8", "replace")):
            raise SignatureError(
                REASON, f"the signature does not match (key {kid!r}, run {run_id!r})"
            )


def unverified_records(signer: Signer, run_id: str, records: Iterable[Any]) -> dict[str, str]:
    """``{seq: reason}`` for the journal records of ``run_id`` that fail verification.

    ``records`` are :class:`~agentbus.transports.JournalRecord` objects (``seq``,
    ``record``).
    """
    failed: dict[str, str] = {}
    for r in records:
        try:
            signer.verify_record(run_id, r.record)
        except SignatureError as exc:
            failed[str(r.seq)] = exc.detail or exc.reason
    return failed
