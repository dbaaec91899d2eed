"""URL handling shared by the transports: redaction of secrets."""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote_plus, urlsplit

__all__ = ["redact_url"]

_SECRET_PARAMS = frozenset({"password", "pass", "token", "key", "secret"})


def redact_url(url: str) -> str:
    """``url`` with any password (userinfo or query parameter) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    pairs = parse_qsl(parts.query)
    if "@" not in netloc and not any(k.lower() in _SECRET_PARAMS for k, _ in pairs):
        return url  # nothing secret in it: keep it exactly as written
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}{':***' if sep else ''}@{host}" if user else f":***@{host}"
        if not sep and user and parts.scheme.startswith("redis"):
            # redis://secret@host means the password is "secret" (no username).
            netloc = f"***@{host}"
    # Rebuilt by hand, not with urlencode/urlunsplit: those re-encode the other query
    # values, drop blank ones and turn "memory://?..." into "memory:?...".
    query = "&".join(
        f"{k}=***" if sep and unquote_plus(k).lower() in _SECRET_PARAMS else f"{k}{sep}{v}"
        for k, sep, v in (pair.partition("=") for pair in parts.query.split("&"))
    )
    head = url.split("#", 1)[0]
    out = f"{parts.scheme}:" if parts.scheme else ""
    if head[len(out) :].startswith("//"):
        out += "//" + netloc
    out += parts.path
    if "?" in head:
        out += "?" + query
    return out + ("#" + parts.fragment if parts.fragment else "")
