"""Tokens: length, sign and verify time, against itsdangerous's stock serializers."""

from __future__ import annotations

from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from twilio_feedback.tokens import TokenSigner

from .common import Figure, Section, interleaved, median, spread, timeit

KEY = "bench-secret-key-0123456789-abcdefghijklmnop"


def run(quick: bool = False) -> Section:
    """Measure and return the section."""
    ours = TokenSigner(KEY)
    stock = URLSafeTimedSerializer(KEY)
    ts = TimestampSigner(KEY)
    tracking_id, token = ours.issue()
    stock_token = stock.dumps(tracking_id)
    ts_token = ts.sign(tracking_id)
    n = 2_000 if quick else 20_000
    repeats = 5 if quick else 15
    cases = {
        "ours sign": lambda: timeit(ours.issue, n),
        "ours verify": lambda: timeit(lambda: ours.verify(token, 3600), n),
        "URLSafeTimedSerializer sign": lambda: timeit(lambda: stock.dumps(tracking_id), n),
        "URLSafeTimedSerializer verify": lambda: timeit(
            lambda: stock.loads(stock_token, max_age=3600), n
        ),
        "TimestampSigner sign": lambda: timeit(lambda: ts.sign(tracking_id), n),
        "TimestampSigner verify": lambda: timeit(lambda: ts.unsign(ts_token, max_age=3600), n),
    }
    samples = interleaved(cases, repeats)
    section = Section("Tokens")
    lengths = {
        "ours": len(token),
        "URLSafeTimedSerializer": len(stock_token),
        "TimestampSigner": len(ts_token),
    }
    for name, length in lengths.items():
        section.figures.append(
            Figure(
                f"{name}: token length (12-char id)",
                f"{length} chars",
                target="<= 32" if name == "ours" else "",
                verdict=("met" if length <= 32 else "missed") if name == "ours" else "",
            )
        )
    for name, values in samples.items():
        lo, hi = spread(values)
        section.figures.append(
            Figure(f"{name}", f"{median(values) * 1e6:.2f} µs", f"{lo * 1e6:.2f}-{hi * 1e6:.2f}")
        )
    section.notes.append(
        "Ours packs version, 72-bit id, 32-bit time and an 80-bit truncated HMAC-SHA256 "
        "into 24 bytes (one base64url pass); the stock serializers carry JSON, a base62 "
        "timestamp and a full 160-bit SHA-1 signature."
    )
    return section
