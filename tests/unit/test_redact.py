"""The one redaction: each secret shape masked, the rest left as written, idempotent."""

from __future__ import annotations

import io
import logging
import sys
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentbus.compare import normalize
from agentbus.redact import install_log_redaction, masked_output, redact, redact_text, redact_url


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("redis://app:pa/ss@h:6379/0", "redis://app:***@h:6379/0"),
        ("redis://pa/ss@h/0", "redis://***@h/0"),
        ("rediss://app:p@ss:w/rd@h:1/0", "rediss://app:***@h:1/0"),
        ("see 'https://u:pw@api.test/v1' now", "see 'https://u:***@api.test/v1' now"),
        ("rediss://h/0?ssl_password=kpw&ssl_ca_certs=/ca", "rediss://h/0?ssl_password=***&ssl_ca_certs=/ca"),
        ("GET https://h/x?api_key=k1&q=2", "GET https://h/x?api_key=***&q=2"),
        ("https://h/x?key=AIza1&access_token=t1&secret=s1", "https://h/x?key=***&access_token=***&secret=***"),
        ("https://h/f?token=t9#top", "https://h/f?token=***"),  # masks on to the end
        ("failed: password=hunter2, retrying", "failed: password=***, retrying"),
        ("{'password': 'hunter2', 'user': 'me'}", "{'password': '***', 'user': 'me'}"),
        ('{"api_key": "k1"}', '{"api_key": "***"}'),
        ("Authorization: Bearer abc.def", "Authorization: Bearer ***"),
        ("X-Api-Key: abc123", "X-Api-Key: ***"),
        ("key sk-proj-abcdefghijklmnop used", "key sk-*** used"),
    ],
)  # fmt: skip
def test_each_shape_is_masked(text: str, masked: str) -> None:
    assert redact_text(text) == masked
    assert redact_text(masked) == masked  # idempotent


@pytest.mark.parametrize(
    "text",
    [
        "https://medium.com/@someone/post",
        "https://h:8080/users/@me",
        "max_tokens=5 prompt_tokens: 3 tokenizer=gpt2",
        "RuntimeError in agent 'secrets-desk': upstream refused",
        "key=orders password_file=/etc/pw",
        "redis://localhost:6379/0?prefix=app:",
    ],
)
def test_what_is_not_a_secret_stays(text: str) -> None:
    assert redact_text(text) == text


@given(
    password=st.text(st.sampled_from("Zq9/@:?#ab1-_.~%"), min_size=1, max_size=20),
    user=st.sampled_from(["", "app"]),
)
def test_a_redis_url_never_shows_its_password_raw_or_encoded(password: str, user: str) -> None:
    marker = "Zq9" + password
    for url in (
        f"redis://{user}:{marker}@db.internal:6379/0",
        f"redis://{user}:{quote(marker, safe='')}@db.internal:6379/0",
    ):
        shown = redact_url(url)
        assert "Zq9" not in shown, (url, shown)
        assert "Zq9" not in redact_text(f"connecting to {url} failed"), url


def test_structured_values_mask_secret_keys_only() -> None:
    value = {
        "headers": {"Authorization": "Bearer x", "X-Api-Key": "k", "Accept": "json"},
        "usage": {"prompt_tokens": 3, "completion_tokens_details": {"reasoning_tokens": 1}},
        "access_token": "t",
        "next": "https://h/f?token=t&p=2",
    }
    assert redact(value) == {
        "headers": {"Authorization": "***", "X-Api-Key": "***", "Accept": "json"},
        "usage": {"prompt_tokens": 3, "completion_tokens_details": {"reasoning_tokens": 1}},
        "access_token": "***",
        "next": "https://h/f?token=***&p=2",
    }


def test_log_records_are_masked_with_their_exceptions() -> None:
    logger = logging.getLogger("test.redact.own")
    install_log_redaction(logger)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        try:
            raise ValueError("bad https://h/?api_key=Zq7k")
        except ValueError:
            logger.exception("calling %s", "redis://u:Zq7p@h/0")
    finally:
        logger.removeHandler(handler)
    assert "Zq7" not in stream.getvalue()
    assert "api_key=***" in stream.getvalue()  # the traceback, masked


def test_masked_output_masks_stdout_and_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    with masked_output():
        print("url redis://u:Zq6p@h/0")
        print("token=Zq6t", file=sys.stderr)
    out, err = capsys.readouterr()
    assert out == "url redis://u:***@h/0\n"
    assert err == "token=***\n"


def test_replay_compares_events_masked() -> None:
    # Call responses are journaled masked, so a replayed handler passes on "***" where
    # the recorded event held the secret: the two must compare equal.
    recorded = {"type": "t", "data": {"next": "https://h/f?token=Zq5t"}}
    replayed = {"type": "t", "data": {"next": "https://h/f?token=***"}}
    assert normalize(recorded) == normalize(replayed)
