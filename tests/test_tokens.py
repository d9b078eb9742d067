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
