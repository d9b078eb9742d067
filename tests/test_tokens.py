from __future__ import annotations

import base64
import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from itsdangerous import BadData, BadSignature, SignatureExpired

from twilio_feedback.tokens import TOKEN_LENGTH, ExpiredToken, InvalidToken, TokenSigner

KEY_A = "a" * 32 + "first-key"
KEY_B = "b" * 32 + "second-key"
URL_SAFE = re.compile(r"^[A-Za-z0-9_-]+$")


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_token_is_short_and_url_safe() -> None:
    tracking_id, token = TokenSigner(KEY_A).issue()
    assert len(token) == TOKEN_LENGTH <= 32
    assert URL_SAFE.match(token)
    assert len(base64.urlsafe_b64decode(tracking_id + "=" * (-len(tracking_id) % 4))) * 8 >= 72


def test_round_trip() -> None:
    signer = TokenSigner(KEY_A)
    tracking_id, token = signer.issue()
    assert signer.verify(token, max_age=60).tracking_id == tracking_id


@settings(max_examples=300)
@given(
    position=st.integers(0, TOKEN_LENGTH - 1),
    replacement=st.sampled_from(string.ascii_letters + string.digits + "-_"),
)
def test_any_single_character_change_is_invalid(position: int, replacement: str) -> None:
    signer = TokenSigner(KEY_A)
    _, token = signer.issue()
    if token[position] == replacement:
        return
    tampered = token[:position] + replacement + token[position + 1 :]
    with pytest.raises(InvalidToken):
        signer.verify(tampered, max_age=3600)


@settings(max_examples=200)
@given(st.data())
def test_many_tokens_are_short_unique_and_verify(data: st.DataObject) -> None:
    signer = TokenSigner([KEY_A, KEY_B])
    seen = set()
    for _ in range(data.draw(st.integers(1, 20))):
        tracking_id, token = signer.issue()
        assert len(token) <= 32
        assert URL_SAFE.match(token)
        assert signer.verify(token, max_age=60).tracking_id == tracking_id
        seen.add(token)
    assert len(seen) >= 1


@given(st.text(max_size=200) | st.binary(max_size=200))
def test_arbitrary_input_is_refused_cleanly(garbage: str | bytes) -> None:
    with pytest.raises(InvalidToken):
        TokenSigner(KEY_A).verify(garbage, max_age=60)


def test_oversized_input_is_refused_before_decoding() -> None:
    with pytest.raises(InvalidToken, match="malformed"):
        TokenSigner(KEY_A).verify("A" * 10_000_000, max_age=60)


def test_rotation_old_tokens_verify_new_key_signs() -> None:
    old = TokenSigner(KEY_A)
    rotated = TokenSigner([KEY_A, KEY_B])
    new_only = TokenSigner(KEY_B)
    old_id, old_token = old.issue()
    assert rotated.verify(old_token, max_age=60).tracking_id == old_id
    new_id, new_token = rotated.issue()
    assert new_only.verify(new_token, max_age=60).tracking_id == new_id
    with pytest.raises(InvalidToken):
        old.verify(new_token, max_age=60)


def test_other_key_or_salt_cannot_verify() -> None:
    _, token = TokenSigner(KEY_A).issue()
    with pytest.raises(InvalidToken):
        TokenSigner(KEY_B).verify(token, max_age=60)
    with pytest.raises(InvalidToken):
        TokenSigner(KEY_A, salt="another-use").verify(token, max_age=60)


def test_expiry_carries_tracking_id_and_date() -> None:
    clock = Clock()
    signer = TokenSigner(KEY_A, timer=clock)
    tracking_id, token = signer.issue()
    clock.now += 61
    with pytest.raises(ExpiredToken) as info:
        signer.verify(token, max_age=60)
    assert info.value.payload == tracking_id
    assert info.value.date_signed is not None
    assert int(info.value.date_signed.timestamp()) == int(clock.now - 61)
    # Callers can catch at the itsdangerous level they care about.
    assert isinstance(info.value, SignatureExpired)
    assert isinstance(info.value, BadData)


def test_future_tokens_beyond_skew_are_invalid() -> None:
    clock = Clock()
    signer = TokenSigner(KEY_A, timer=clock, max_skew=30)
    _, token = signer.issue()
    clock.now -= 10
    signer.verify(token, max_age=60)  # within skew
    clock.now -= 60
    with pytest.raises(BadSignature, match="future"):
        signer.verify(token, max_age=60)


def test_itsdangerous_defaults_are_longer() -> None:
    # The reason this module exists: the stock serializer is too long for an SMS.
    from itsdangerous import URLSafeTimedSerializer

    stock = URLSafeTimedSerializer(KEY_A).dumps("0123456789")
    _, ours = TokenSigner(KEY_A).issue()
    assert len(stock) > 45 > len(ours)


def test_signer_needs_a_key() -> None:
    with pytest.raises(ValueError):
        TokenSigner([])


# -- properties: mutations never verify, genuine tokens always do ------------------------

PROPERTY = settings(max_examples=200)
"""Bounded for CI by the example count (no deadline: see tests/conftest.py)."""
_ALPHABET = string.ascii_letters + string.digits + "-_"
keys = st.text(min_size=1, max_size=64) | st.binary(min_size=1, max_size=64)
key_lists = st.lists(keys, min_size=1, max_size=4, unique=True)
salts = st.text(min_size=1, max_size=30)


def _raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token)


def _token(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii")


@st.composite
def mutations(draw: st.DrawFn, token: str) -> str:
    """``token`` changed in one of the ways an attacker or a mangling client would."""
    kind = draw(
        st.sampled_from(
            ["bit_flip", "char_flip", "substitute", "truncate", "extend", "case", "splice"]
        )
    )
    if kind == "bit_flip":  # in the decoded bytes: header, tracking id, time or MAC
        raw = bytearray(_raw(token))
        for bit in draw(st.sets(st.integers(0, len(raw) * 8 - 1), min_size=1, max_size=8)):
            raw[bit // 8] ^= 1 << (bit % 8)
        return _token(bytes(raw))
    if kind == "char_flip":  # in the characters as sent: may leave the alphabet
        chars = bytearray(token.encode("ascii"))
        position = draw(st.integers(0, len(chars) - 1))
        chars[position] ^= 1 << draw(st.integers(0, 6))
        return chars.decode("ascii")
    if kind == "substitute":
        chars = list(token)
        for position in draw(st.sets(st.integers(0, len(chars) - 1), min_size=1, max_size=6)):
            chars[position] = draw(st.sampled_from(_ALPHABET))
        return "".join(chars)
    if kind == "truncate":
        return token[: draw(st.integers(0, len(token) - 1))]
    if kind == "extend":
        return token + draw(st.text(_ALPHABET + "=.~ %", min_size=1, max_size=8))
    if kind == "case":
        letters = [i for i, c in enumerate(token) if c.isalpha()]
        chosen = draw(st.sets(st.sampled_from(letters), min_size=1))
        return "".join(c.swapcase() if i in chosen else c for i, c in enumerate(token))
    # splice: the head of one genuine token with the tail of another
    other = draw(st.sampled_from([t for t in GENUINE if t != token]))
    cut = draw(st.integers(1, len(token) - 1))
    return token[:cut] + other[cut:]


NOW = Clock()
ROTATED = TokenSigner([KEY_B, KEY_A], timer=NOW)
# Issued once, so that Hypothesis can replay and shrink a failing example.
GENUINE = [ROTATED.issue()[1] for _ in range(16)]


@PROPERTY
@given(st.data())
def test_mutated_tokens_never_verify(data: st.DataObject) -> None:
    signer = ROTATED
    token = data.draw(st.sampled_from(GENUINE))
    signer.verify(token, max_age=3600)
    mutated = data.draw(mutations(token))
    if mutated in GENUINE:  # characters put back as they were, or a splice at the version
        return
    with pytest.raises(InvalidToken):
        signer.verify(mutated, max_age=3600)


@PROPERTY
@given(signing=key_lists, verifying=key_lists, salt=salts)
def test_tokens_of_other_keys_never_verify(
    signing: list[str | bytes], verifying: list[str | bytes], salt: str
) -> None:
    def as_bytes(key: str | bytes) -> bytes:
        return key.encode() if isinstance(key, str) else key

    if as_bytes(signing[-1]) in {as_bytes(key) for key in verifying}:
        return  # the same newest key: that one must verify
    _, token = TokenSigner(signing, salt=salt).issue()
    with pytest.raises(InvalidToken):
        TokenSigner(verifying, salt=salt).verify(token, max_age=3600)


@PROPERTY
@given(key_list=key_lists, salt=salts, other_salt=salts)
def test_tokens_of_other_salts_never_verify(
    key_list: list[str | bytes], salt: str, other_salt: str
) -> None:
    if salt == other_salt:
        return
    _, token = TokenSigner(key_list, salt=salt).issue()
    with pytest.raises(InvalidToken):
        TokenSigner(key_list, salt=other_salt).verify(token, max_age=3600)


@PROPERTY
@given(
    key_list=key_lists,
    newer=st.lists(keys, max_size=3),
    salt=salts,
    issued=st.integers(0, 2**32 - 1),
    max_age=st.integers(1, 10 * 365 * 86400),
    elapsed=st.floats(0, 1),
)
def test_sign_then_verify_round_trips_with_rotation(
    key_list: list[str | bytes],
    newer: list[str | bytes],
    salt: str,
    issued: int,
    max_age: int,
    elapsed: float,
) -> None:
    clock = Clock(float(issued))
    signer = TokenSigner(key_list, salt=salt, timer=clock)
    tracking_id, token = signer.issue()
    assert len(token) == TOKEN_LENGTH
    assert URL_SAFE.match(token)
    clock.now = issued + elapsed * max_age  # anywhere from issue to max_age
    verified = signer.verify(token, max_age=max_age)
    assert (verified.tracking_id, verified.issued_at) == (tracking_id, issued)
    # Rotation: newer keys added after the token was signed still accept it.
    rotated = TokenSigner([*key_list, *newer], salt=salt, timer=clock)
    assert rotated.verify(token, max_age=max_age).tracking_id == tracking_id
    assert rotated.verify(token.encode("ascii"), max_age=max_age).tracking_id == tracking_id


@PROPERTY
@given(
    issued=st.integers(10**6, 2**32 - 10**6),
    max_age=st.integers(1, 10**5),
    skew=st.integers(0, 600),
    eighths=st.integers(-8 * 700, 8 * (10**5 + 100)),
)
def test_expired_exactly_when_past_max_age(
    issued: int, max_age: int, skew: int, eighths: int
) -> None:
    clock = Clock(float(issued))
    signer = TokenSigner(KEY_A, timer=clock, max_skew=skew)
    tracking_id, token = signer.issue()
    elapsed = eighths / 8  # exact in binary: the boundary is tested exactly
    clock.now = issued + elapsed
    if elapsed < -skew:
        with pytest.raises(InvalidToken, match="future"):
            signer.verify(token, max_age=max_age)
    elif elapsed > max_age:
        with pytest.raises(ExpiredToken) as info:
            signer.verify(token, max_age=max_age)
        assert info.value.payload == tracking_id
    else:
        assert signer.verify(token, max_age=max_age).tracking_id == tracking_id


@pytest.mark.parametrize("offset", [0.0, 0.125, 1.0])
def test_expiry_boundary(offset: float) -> None:
    clock = Clock(1_800_000_000.0)
    signer = TokenSigner(KEY_A, timer=clock)
    _, token = signer.issue()
    clock.now += 60  # exactly max_age: still valid
    signer.verify(token, max_age=60)
    clock.now += offset
    if offset:
        with pytest.raises(ExpiredToken):
            signer.verify(token, max_age=60)


def test_a_second_format_verifies_beside_the_first(monkeypatch: pytest.MonkeyPatch) -> None:
    import twilio_feedback.tokens as tokens

    signer = TokenSigner(KEY_A)
    _, old = signer.issue()
    wider = tokens.TokenFormat(version=2, id_bytes=12, mac_bytes=13)
    assert wider.length == 40
    formats = {**tokens.FORMATS, 2: wider}
    monkeypatch.setattr(tokens, "FORMATS", formats)
    monkeypatch.setattr(tokens, "_CURRENT", wider)
    monkeypatch.setattr(tokens, "_HEADERS", {v: f.header for v, f in formats.items()})
    monkeypatch.setattr(tokens, "_LENGTHS", frozenset(f.length for f in formats.values()))
    tracking_id, new = signer.issue()
    assert len(new) == 40
    assert signer.verify(new, 60).tracking_id == tracking_id
    assert signer.verify(old, 60).tracking_id  # links already sent still count
    forged = new[:-1] + ("A" if new[-1] != "A" else "B")
    with pytest.raises(InvalidToken):
        signer.verify(forged, 60)
    # A version byte that says 2 on a token of format 1's length is refused.
    raw = bytearray(base64.urlsafe_b64decode(old))
    raw[0] = 2
    with pytest.raises(InvalidToken, match="version"):
        signer.verify(base64.urlsafe_b64encode(bytes(raw)).decode(), 60)
