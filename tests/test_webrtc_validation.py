"""Client input validation: a clean value or a ClientInputError (4xx), whatever arrives."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transports.webrtc.tokens import make_token
from transports.webrtc.validation import (
    MAX_BODY_BYTES,
    ClientInputError,
    JoinRequest,
    bearer_token,
    check_room_token,
    decode_json_object,
    keys_match,
    parse_join_body,
    validate_display_name,
    validate_language,
    validate_participant_id,
    validate_participant_key,
    validate_room_name,
    validate_sdp_offer,
    validate_token_field,
)

SECRET = "correct horse battery staple"
SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
LANGS = {"speakable": ["en", "es"], "hearable": ["en", "es", "fr"], "default_language": "en"}

FUZZ = settings(max_examples=120, deadline=None)

#: Anything a JSON body or a header can hold, and then some.
ANY = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=80) | st.binary(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _only_client_errors(check, *args, **kwargs):
    """Run a check; it may return or raise ClientInputError (4xx), nothing else."""
    try:
        return check(*args, **kwargs)
    except ClientInputError as exc:
        assert 400 <= exc.status <= 499
        assert "\n" not in exc.message and len(exc.message) < 300
        return None


# --------------------------------------------------------------------------- rooms and ids


@pytest.mark.parametrize("name", ["lobby", "a", "Room_1-b", "x" * 64])
def test_room_names_of_letters_digits_dash_underscore_pass(name):
    assert validate_room_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "lobby\n", "lobby\r\n", "lob by", "x" * 65, "lobbý", "a/b", "..", "١٢٣", None, 5, ["lobby"]]
)
def test_other_room_names_are_400(name):
    with pytest.raises(ClientInputError) as caught:
        validate_room_name(name)
    assert caught.value.status == 400


@FUZZ
@given(ANY)
def test_no_value_makes_an_identifier_check_raise_anything_else(value):
    for check in (validate_room_name, validate_participant_id, validate_participant_key, validate_token_field):
        _only_client_errors(check, value)
    assert keys_match(value, "k" * 32) in (True, False)
    assert bearer_token(value) is None or isinstance(bearer_token(value), str)


def test_participant_ids_that_cannot_exist_are_404():
    assert validate_participant_id("0123456789abcdef0123456789abcdef") == "0123456789abcdef0123456789abcdef"
    for bad in ("", "../x", "id\n", "x" * 65, "é"):
        with pytest.raises(ClientInputError) as caught:
            validate_participant_id(bad)
        assert caught.value.status == 404


def test_keys_compare_in_constant_time_and_never_raise_on_non_ascii():
    key = "Zm9vYmFyYmF6cXV4cXV1eHF1dXg0MjQy"
    assert keys_match(key, key)
    assert not keys_match(key[:-1] + "x", key)
    assert not keys_match("ключ", key)  # hmac.compare_digest("ключ", key) raises TypeError
    assert not keys_match("\udcff", key)  # a lone surrogate
    assert not keys_match("x" * 1_000_000, key)
    assert not keys_match(None, key) and not keys_match(b"key", key) and not keys_match(key, None)
    assert not keys_match("", "")  # no key was issued: nothing matches
    for bad in ("", "ключ", "x" * 129, None):
        with pytest.raises(ClientInputError) as caught:
            validate_participant_key(bad)
        assert caught.value.status == 403


# --------------------------------------------------------------------------- fields


def test_display_names_are_cleaned_for_logs_and_bounded():
    assert validate_display_name(None) == "guest"
    assert validate_display_name("  Ann \n\t Lee ") == "Ann Lee"
    assert validate_display_name("Ann\u202eeL\u200b") == "AnneL"  # bidi override, zero-width space
    assert validate_display_name("\n\r\x00") == "guest"
    assert validate_display_name("Zoë 張") == "Zoë 張"
    for bad in ("x" * 65, 5, ["Ann"], {"n": 1}):
        with pytest.raises(ClientInputError) as caught:
            validate_display_name(bad)
        assert caught.value.status == 400


@FUZZ
@given(st.text(max_size=64))
def test_any_short_name_comes_out_printable_on_one_line(name):
    clean = validate_display_name(name)
    assert clean and clean == clean.strip() and "\n" not in clean and "\r" not in clean
    assert all(ch.isprintable() for ch in clean)


def test_languages_must_be_short_tags_from_the_allowed_set():
    assert validate_language("es", "hears", ["en", "es"]) == "es"
    assert validate_language(None, "speaks", ["en"], default="en") == "en"
    assert validate_language("", "speaks", ["en"], default="en") == "en"
    with pytest.raises(ClientInputError, match=r"'hears': 'fr' is not available \(choose from: en, es\)"):
        validate_language("fr", "hears", ["es", "en"])
    for bad in (None, 5, ["en"], "e", "english-of-the-queen-and-her-court-xx", "en\n", "x" * 10_000):
        with pytest.raises(ClientInputError) as caught:
            validate_language(bad, "speaks", ["en"])
        assert caught.value.status == 400
        assert "x" * 40 not in caught.value.message  # never echoed


def test_sdp_must_be_an_offer_with_audio():
    assert validate_sdp_offer(SDP, "offer") == SDP
    for sdp, kind in ((SDP, "answer"), (SDP, None), (None, "offer"), ("v=0", "offer"), (5, "offer"),
                      (SDP + "\x00", "offer"), (SDP + "a" * 200_000, "offer")):
        with pytest.raises(ClientInputError) as caught:
            validate_sdp_offer(sdp, kind)
        assert caught.value.status == 400


def test_bearer_tokens_are_read_from_the_authorization_header():
    assert bearer_token("Bearer abc.def") == "abc.def"
    assert bearer_token("Bearer   ") is None
    assert bearer_token("Basic abc") is None
    assert bearer_token(None) is None


# --------------------------------------------------------------------------- tokens


def test_room_tokens_401_when_missing_403_when_wrong_and_return_the_user():
    good = make_token("lobby", SECRET, 60, user="ann")
    assert check_room_token(good, "lobby", SECRET, required=True) == "ann"
    assert check_room_token(make_token("lobby", SECRET), "lobby", SECRET, required=True) is None
    assert check_room_token(None, "lobby", None, required=False) is None
    assert check_room_token(["junk"], "lobby", None, required=False) is None  # not required: ignored
    cases = [(None, 401), ("", 401), (5, 400), ("é" * 10, 400), ("x" * 5000, 400),
             ("²." + "a" * 43, 400), ("1." + "a" * 43, 403), (good, 403)]
    for token, status in cases:
        room = "other" if token is good else "lobby"
        with pytest.raises(ClientInputError) as caught:
            check_room_token(token, room, SECRET, required=True)
        assert caught.value.status == status, token


@FUZZ
@given(ANY, st.text(max_size=70))
def test_no_token_or_room_makes_the_token_check_raise_anything_else(token, room):
    _only_client_errors(check_room_token, token, room, SECRET, required=True)


# --------------------------------------------------------------------------- bodies


def test_bodies_that_are_not_one_json_object_are_400_or_413():
    cases = [
        (b"", 400), (b"not json", 400), (b"\xff\xfe", 400), (b"[1, 2]", 400), (b"null", 400),
        (b"[" * 100_000, 400),  # json.loads would raise RecursionError
        (b'{"a":' * 20_000 + b"1" + b"}" * 20_000, 400),
        (b"1" * 5000, 400),  # int() digit limit: ValueError
        (b" " * (MAX_BODY_BYTES + 1), 413),
    ]
    for raw, status in cases:
        with pytest.raises(ClientInputError) as caught:
            decode_json_object(raw)
        assert caught.value.status == status, raw[:20]
    assert decode_json_object(b'{"a": [[["deep enough"]]], "b": "[{"}') == {"a": [[["deep enough"]]], "b": "[{"}


def test_a_join_body_becomes_a_typed_request():
    body = {"sdp": SDP, "type": "offer", "name": " Ann\n", "speaks": "es", "token": "t.x"}
    assert parse_join_body(body, **LANGS) == JoinRequest(sdp=SDP, name="Ann", speaks="es", hears="es", token="t.x")
    raw = json.dumps({"sdp": SDP, "type": "offer", "hears": "fr"}).encode()
    assert parse_join_body(raw, **LANGS) == JoinRequest(sdp=SDP, name="guest", speaks="en", hears="fr", token=None)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"type": "answer"}, "'type' must be 'offer'"),
        ({"sdp": 5}, "'sdp' must be an SDP offer"),
        ({"speaks": "fr"}, "'speaks': 'fr' is not available"),
        ({"speaks": {"$ne": 1}}, "'speaks' must be a language code"),
        ({"hears": "de"}, "'hears': 'de' is not available"),
        ({"name": "x" * 65}, "'name' must be text"),
        ({"name": 7}, "'name' must be text"),
    ],
)
def test_each_bad_join_field_is_named_in_a_400(change, message):
    body = {"sdp": SDP, "type": "offer", "speaks": "en", "hears": "es", **change}
    with pytest.raises(ClientInputError) as caught:
        parse_join_body(body, **LANGS)
    assert caught.value.status == 400 and message in caught.value.message


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["sdp", "type", "name", "speaks", "hears", "token", "other"]), ANY, max_size=7
    )
    | ANY
)
def test_no_body_makes_join_parsing_raise_anything_else(body):
    result = _only_client_errors(parse_join_body, body, **LANGS)
    if result is not None:
        assert result.speaks in LANGS["speakable"] and result.hears in LANGS["hearable"]


@FUZZ
@given(st.binary(max_size=2000))
def test_no_raw_body_makes_join_parsing_raise_anything_else(raw):
    _only_client_errors(parse_join_body, raw, **LANGS)


def test_client_input_errors_are_4xx_only():
    with pytest.raises(ValueError):
        ClientInputError(500, "not a client error")
    error = ClientInputError(409, "room lobby is full")
    assert (error.status, error.message, str(error), error.retryable) == (409, "room lobby is full", "room lobby is full", False)
