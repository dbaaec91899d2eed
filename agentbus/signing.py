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

From the environment (``Signer.from_env``, which ``Runtime`` uses when no signer is
passed)::

    AGENTBUS_SIGNING_KEYS="k1:<base64 secret>,k2:<base64 secret>"
    AGENTBUS_SIGNING_KEY_ID="k2"          optional when there is one key
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
from collections.abc import Mapping

from .envelope import Envelope
from .errors import SignatureError, UsageError

__all__ = ["KEY_ID_ATTR", "MIN_KEY_BYTES", "SIGNATURE_ATTR", "Signer"]

SIGNATURE_ATTR = "sig"
KEY_ID_ATTR = "sigkid"
#: Shorter secrets are refused: HMAC-SHA256 wants at least 128 bits of key.
MIN_KEY_BYTES = 16
ENV_KEYS = "AGENTBUS_SIGNING_KEYS"
ENV_KEY_ID = "AGENTBUS_SIGNING_KEY_ID"
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
REASON = "bad signature"


def canonical_bytes(env: Envelope) -> bytes:
    """The bytes a signature covers: the envelope's JSON minus ``sig``, keys sorted."""
    obj = env.to_dict()
    obj.pop(SIGNATURE_ATTR, None)
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class Signer:
    """Signs and verifies envelopes with HMAC-SHA256 keys identified by key ids.

    ``keys`` maps key ids to secrets (at least :data:`MIN_KEY_BYTES` bytes); every key
    verifies, ``active`` signs. Raises :class:`UsageError` for a bad key set; the
    secrets never appear in its messages or its ``repr``.
    """

    def __init__(self, keys: Mapping[str, bytes], active: str) -> None:
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
        self._keys = dict(keys)
        self.active = active

    @property
    def key_ids(self) -> list[str]:
        """The ids of the keys that verify (sorted)."""
        return sorted(self._keys)

    def __repr__(self) -> str:
        return f"Signer(key_ids={self.key_ids!r}, active={self.active!r})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Signer | None:
        """The signer configured by ``AGENTBUS_SIGNING_KEYS``/``_KEY_ID``, or ``None``.

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
        return cls(keys, active)

    def _mac(self, kid: str, env: Envelope) -> str:
        digest = hmac.new(self._keys[kid], canonical_bytes(env), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(self, env: Envelope) -> None:
        """Sign ``env`` in place with the active key (replacing any old signature)."""
        env.extensions.pop(SIGNATURE_ATTR, None)
        env.extensions[KEY_ID_ATTR] = self.active
        env.extensions[SIGNATURE_ATTR] = self._mac(self.active, env)

    def verify(self, env: Envelope) -> None:
        """Check ``env``'s signature.

        Raises :class:`SignatureError` (reason ``bad signature``) when it is unsigned,
        names an unknown key, or does not match (the event was altered, or signed with
        another secret).
        """
        kid = env.extensions.get(KEY_ID_ATTR)
        sig = env.extensions.get(SIGNATURE_ATTR)
        if kid is None and sig is None:
            raise SignatureError(REASON, "the event is unsigned")
        if not isinstance(kid, str) or not isinstance(sig, str):
            raise SignatureError(REASON, f"both {KEY_ID_ATTR!r} and {SIGNATURE_ATTR!r} are needed")
        if kid not in self._keys:
            raise SignatureError(REASON, f"unknown signing key id {kid!r}")
        if not hmac.compare_digest(self._mac(kid, env), sig):
            raise SignatureError(REASON, f"the signature does not match (key {kid!r})")
