"""Compact signed tokens: the tracking id that rides in an outgoing link.

Formats are versioned here, in :data:`FORMATS`: the first byte of every token says which
layout it has, the newest format signs, and every known one verifies, so a second format
can be added while links of the first are still live. Format 1 (django-sesame style, one
base64url pass, no padding)::

    version (1 byte) | tracking id (9 bytes) | issued at (4 bytes, Unix seconds) | MAC (10 bytes)

24 bytes -> exactly 32 URL-safe characters, where itsdangerous's
``URLSafeTimedSerializer`` needs 51 for a 10-character id. The 72-bit random id is the
store key; the 80-bit truncated HMAC-SHA256 makes a forgery cost 2**80 guesses, and every
guess needs a request, so it is out of reach. Keys come from itsdangerous's ``Signer``
key derivation (HMAC of the secret and a salt), so another use of the same secret with
another salt can never mint a valid token here.

Rejections raise itsdangerous's own exceptions, so callers can catch at the level they
care about: :class:`InvalidToken` (a ``BadSignature``) or :class:`ExpiredToken` (a
``SignatureExpired``, still carrying the tracking id and issue time).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from itsdangerous import BadSignature, SignatureExpired, Signer

__all__ = [
    "DEFAULT_SALT",
    "FORMATS",
    "TOKEN_LENGTH",
    "ExpiredToken",
    "InvalidToken",
    "TokenFormat",
    "TokenSigner",
    "VerifiedToken",
    "derive_key",
]

DEFAULT_SALT = "twilio-feedback.token"
"""Separates these tokens from anything else signed with the same secret."""
DERIVED_KEY_SALT = b"twilio-feedback.derived-key"
"""What :func:`derive_key` signs: this library's own, so a derived key is not anything
else the framework's secret signs."""


def derive_key(secret: str | bytes) -> str:
    """A signing key (43 URL-safe characters) derived from a framework's own secret
    (Flask's or Django's ``SECRET_KEY``): HMAC-SHA256 of :data:`DERIVED_KEY_SALT`, keyed
    with the secret. One-way, so the key reveals nothing of the secret, and distinct from
    every value the framework signs with it. Rotating the framework's secret rotates the
    derived key: derive one from each old secret still accepted (its fallbacks), or links
    already sent stop confirming."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    digest = hmac.new(key, DERIVED_KEY_SALT, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class TokenFormat:
    """One token layout: ``version`` (the first byte), a random id of ``id_bytes``, the
    issue time in whole seconds (4 bytes), and a MAC of ``mac_bytes`` over all of that.
    The whole must be a multiple of 3 bytes, so its base64url form needs no padding."""

    version: int
    id_bytes: int
    mac_bytes: int

    @property
    def header(self) -> struct.Struct:
        """The signed part: version, id, issue time."""
        return struct.Struct(f">B{self.id_bytes}sI")

    @property
    def length(self) -> int:
        """Characters in a token of this format."""
        return (self.header.size + self.mac_bytes) * 4 // 3


FORMATS = {1: TokenFormat(version=1, id_bytes=9, mac_bytes=10)}
"""Every format that verifies, by version; the highest version signs."""
_CURRENT = FORMATS[max(FORMATS)]
_HEADERS = {version: fmt.header for version, fmt in FORMATS.items()}
_LENGTHS = frozenset(fmt.length for fmt in FORMATS.values())
TOKEN_LENGTH = _CURRENT.length
"""Characters in every token issued now (32)."""
_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class InvalidToken(BadSignature):
    """Not a token this secret issued: malformed, oversized, tampered or forged."""


class ExpiredToken(SignatureExpired):
    """A genuine token older than the maximum age. ``payload`` is the tracking id."""


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii")


class VerifiedToken:
    """A token that passed signature and age checks."""

    __slots__ = ("issued_at", "tracking_id")

    def __init__(self, tracking_id: str, issued_at: int) -> None:
        self.tracking_id = tracking_id
        self.issued_at = issued_at

    def __repr__(self) -> str:
        return f"VerifiedToken(tracking_id={self.tracking_id!r}, issued_at={self.issued_at})"


class TokenSigner:
    """Issues and verifies compact tokens.

    ``secret_keys`` is one key or a list ordered oldest to newest: the newest signs, every
    one verifies, so keys rotate without breaking links already sent. ``max_skew`` is how
    far in the future an issue time may lie (clock skew between hosts) before the token is
    refused.
    """

    def __init__(
        self,
        secret_keys: str | bytes | Sequence[str | bytes],
        *,
        salt: str | bytes = DEFAULT_SALT,
        max_skew: float = 60.0,
        timer: Callable[[], float] = time.time,
    ) -> None:
        signer = Signer(
            secret_keys,  # type: ignore[arg-type]
            salt=salt,
            key_derivation="hmac",
            digest_method=hashlib.sha256,
        )
        if not signer.secret_keys:
            raise ValueError("at least one secret key is required")
        # Newest first: most tokens in flight were signed by it.
        self._macs = [
            hmac.new(signer.derive_key(key), digestmod=hashlib.sha256)
            for key in reversed(signer.secret_keys)
        ]
        self.max_skew = max_skew
        self._timer = timer

    def _mac(self, index: int, message: bytes, size: int) -> bytes:
        mac = self._macs[index].copy()
        mac.update(message)
        return mac.digest()[:size]

    def issue(self) -> tuple[str, str]:
        """A new ``(tracking_id, token)`` pair in the newest format, signed with the
        newest key."""
        fmt = _CURRENT
        raw_id = secrets.token_bytes(fmt.id_bytes)
        header = _HEADERS[fmt.version].pack(fmt.version, raw_id, int(self._timer()))
        return _b64encode(raw_id), _b64encode(header + self._mac(0, header, fmt.mac_bytes))

    def verify(self, token: str | bytes, max_age: float) -> VerifiedToken:
        """Check signature, then age; return the tracking id and issue time.

        Raises :class:`InvalidToken` or :class:`ExpiredToken`. Never touches a store: a
        forgery costs one HMAC, nothing more.
        """
        raw_token = token.encode("ascii", "replace") if isinstance(token, str) else token
        # Length and alphabet first: an oversized or odd input never reaches the decoder.
        if len(raw_token) not in _LENGTHS or not _B64_ALPHABET.issuperset(raw_token):
            raise InvalidToken("malformed token")
        try:
            raw = base64.urlsafe_b64decode(raw_token)
        except (binascii.Error, ValueError):  # pragma: no cover - alphabet checked above
            raise InvalidToken("malformed token") from None
        fmt = FORMATS.get(raw[0])
        if fmt is None or len(raw_token) != fmt.length:
            raise InvalidToken("unknown token version")
        layout = _HEADERS[fmt.version]
        header, mac = raw[: layout.size], raw[layout.size :]
        _, raw_id, issued_at = layout.unpack(header)
        # compare_digest for every key, so timing does not tell which key (if any) matched.
        matched = False
        for index in range(len(self._macs)):
            matched |= hmac.compare_digest(self._mac(index, header, fmt.mac_bytes), mac)
        if not matched:
            raise InvalidToken("bad signature")
        tracking_id = _b64encode(raw_id)
        now = self._timer()
        if issued_at > now + self.max_skew:
            raise InvalidToken("issued in the future")
        if now - issued_at > max_age:
            raise ExpiredToken(
                "token expired",
                payload=tracking_id,
                date_signed=datetime.fromtimestamp(issued_at, tz=timezone.utc),
            )
        return VerifiedToken(tracking_id, issued_at)
