"""Room tokens: signed for one room, expiring, and never accepted when tampered with."""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError
from transports.webrtc.tokens import SECRET_ENV, make_token, room_secret, verify_token

SECRET = "correct horse battery staple"


def test_a_token_opens_its_own_room_until_it_expires():
    token = make_token("lobby", SECRET, ttl_s=60, now=1000)
    assert verify_token(token, "lobby", SECRET, now=1059) is None
    assert verify_token(token, "lobby", SECRET, now=1061) == "token has expired"


def test_a_token_does_not_open_another_room_or_verify_under_another_secret():
    token = make_token("lobby", SECRET, now=1000)
    assert verify_token(token, "other", SECRET, now=1000) == "token is not valid for this room"
    assert verify_token(token, "lobby", SECRET + "!", now=1000) == "token is not valid for this room"


def test_extending_the_expiry_breaks_the_signature():
    token = make_token("lobby", SECRET, ttl_s=60, now=1000)
    expires, _, signature = token.partition(".")
    forged = f"{int(expires) + 3600}.{signature}"
    assert verify_token(forged, "lobby", SECRET, now=1000) == "token is not valid for this room"


@pytest.mark.parametrize("token", ["", "abc", "123", "123.", ".sig", "x1.sig"])
def test_malformed_tokens_are_rejected(token):
    assert verify_token(token, "lobby", SECRET) == "malformed token"


def test_reasons_never_contain_the_secret_or_the_expected_signature():
    good = make_token("lobby", SECRET, now=1000)
    reason = verify_token("1000.AAAA", "lobby", SECRET, now=1000)
    assert SECRET not in reason and good.partition(".")[2] not in reason


def test_the_secret_comes_from_the_environment_and_must_be_long_enough():
    assert room_secret({}) is None
    assert room_secret({SECRET_ENV: SECRET}) == SECRET
    with pytest.raises(ConfigError, match=SECRET_ENV):
        room_secret({SECRET_ENV: "short"})
