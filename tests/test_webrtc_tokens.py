"""Room tokens: signed for one room (and user), expiring, never accepted when tampered with,
and never an exception whatever a client sends."""

from __future__ import annotations

import base64
import hashlib
import hmac
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import ConfigError
from transports.webrtc.tokens import (
    MAX_USER_LENGTH,
    SECRET_ENV,
    TokenCheck,
    check_token,
    make_token,
    room_secret,
    verify_token,
)

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


# --------------------------------------------------------------------------- hostile input


REASONS = {None, "malformed token", "token is not valid for this room", "token has expired"}

HOSTILE_TOKENS = [
    None,
    "²." + "x" * 43,  # str.isdigit() is true for "²", int() refuses it
    "²³.x",
    "9" * 5000 + ".sig",  # int() of 5,000 digits is refused by Python's digit limit
    "1" * 5000,
    "1700000000." + "é" * 43,  # non-ASCII signature: compare_digest raises TypeError on it
    "1700000000.ü." + "A" * 43,
    "x" * 1_000_000,  # a megabyte
    "." * 10_000,
    "1.2.3.4",
    "\x00.\x00",
    "\ud800.\udfff",  # lone surrogates, as a JSON body may carry
    123,
    b"1700000000.abc",
    ["1700000000", "abc"],
]


@pytest.mark.parametrize("token", HOSTILE_TOKENS, ids=range(len(HOSTILE_TOKENS)))
def test_hostile_tokens_get_a_reason_never_an_exception(token):
    assert verify_token(token, "lobby", SECRET, now=1000) == "malformed token"
    assert not check_token(token, "lobby", SECRET, now=1000).valid


@settings(max_examples=300, deadline=None)
@given(token=st.one_of(st.text(max_size=200), st.text(alphabet="0123456789.-_Aa²é", max_size=120)),
       room=st.text(max_size=80))
def test_no_text_makes_verification_raise(token, room):
    assert verify_token(token, room, SECRET) in REASONS - {None}


@settings(max_examples=200, deadline=None)
@given(token=st.from_type(object) | st.binary() | st.integers() | st.none(), room=st.from_type(object))
def test_no_object_makes_verification_raise(token, room):
    assert verify_token(token, room, SECRET) in REASONS - {None}


@settings(max_examples=200, deadline=None)
@given(
    room=st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z"),
    user=st.text(min_size=1, max_size=MAX_USER_LENGTH).filter(lambda u: u == u.strip()),
    ttl=st.integers(60, 10**7),
)
def test_tokens_with_a_user_round_trip_and_bind_room_and_user(room, user, ttl):
    try:
        token = make_token(room, SECRET, ttl, user=user, now=1000)
    except ValueError:
        # Only users with control or separator characters are refused.
        assert any(unicodedata.category(ch)[0] in "CZ" and ch != " " for ch in user)
        return
    check = check_token(token, room, SECRET, now=1000)
    assert check == TokenCheck(None, user=user, expires=1000 + ttl)
    assert check_token(token, room + "x", SECRET, now=1000).reason == "token is not valid for this room"
    assert check_token(token, room, SECRET, now=1001 + ttl).reason == "token has expired"
    # Another user in the middle field, validly encoded, breaks the signature.
    other = make_token(room, SECRET, ttl, user=user + "x" if len(user) < MAX_USER_LENGTH else "x", now=1000)
    expires, middle, signature = token.split(".")
    forged = f"{expires}.{other.split('.')[1]}.{signature}"
    assert check_token(forged, room, SECRET, now=1000).reason == "token is not valid for this room"
    # Dropping the user turns it into an old-format token that does not verify either.
    assert check_token(f"{expires}.{signature}", room, SECRET, now=1000).reason == "token is not valid for this room"


def test_old_format_tokens_stay_valid_and_carry_no_user():
    token = make_token("lobby", SECRET, ttl_s=60, now=1000)
    assert token.count(".") == 1
    assert check_token(token, "lobby", SECRET, now=1000) == TokenCheck(None, user=None, expires=1060)
    # The exact format issued before users existed: HMAC of "room\nexpiry".
    digest = hmac.new(SECRET.encode(), b"lobby\n1060", hashlib.sha256).digest()
    legacy = "1060." + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert legacy == token


def test_a_user_token_carries_its_user_readably_and_positionally():
    token = make_token("lobby", SECRET, 60, user="Zoë Ångström", now=1000)
    assert token.count(".") == 2 and token.isascii()
    assert check_token(token, "lobby", SECRET, now=1000).user == "Zoë Ångström"


@pytest.mark.parametrize("user", ["", " padded", "a\nb", "tab\there", "x" * (MAX_USER_LENGTH + 1), "\u202eevil"])
def test_users_that_cannot_be_carried_are_refused_when_making(user):
    with pytest.raises(ValueError):
        make_token("lobby", SECRET, user=user)


def test_a_non_canonical_user_field_is_malformed():
    token = make_token("lobby", SECRET, 60, user="ab", now=1000)  # "YWI"
    expires, middle, signature = token.split(".")
    assert middle == "YWI"
    # "YWJ" decodes to the same bytes with different padding bits.
    assert check_token(f"{expires}.YWJ.{signature}", "lobby", SECRET, now=1000).reason == "malformed token"
