"""Insights: what the per-day counts cost per send (``add``) and per confirm, on each store
(the ``django://`` store on SQLite and PostgreSQL included), side by side with records that
carry no country (``Settings.insights=False``: nothing is counted), and the round trips of a
counted confirm."""

from __future__ import annotations

import secrets
import tempfile
import time
from collections.abc import Callable
from typing import Any

from .bench_stores import _round_trips, _servers
from .common import (
    Figure,
    Section,
    django_databases,
    interleaved,
    median,
    ratio_samples,
    spread,
)

TARGET = 1.10  # a counted confirm takes at most 10% more time than an uncounted one
SENDER = "+15017122661"


def _records(prefix: str, count: int, counted: bool) -> list[Any]:
    from twilio_feedback import Record

    now = time.time()
    return [
        Record(
            f"{prefix}{n}-{secrets.token_hex(4)}",
            expires_at=now + 600,
            message_sid="SM" + secrets.token_hex(16),
            created_at=now,
            country="US" if counted else None,
            sender=SENDER if counted else None,
        )
        for n in range(count)
    ]


def _add_case(store: Any, count: int, counted: bool) -> Callable[[], float]:
    def case() -> float:
        records = _records("a", count, counted)
        start = time.perf_counter()
        for record in records:
            store.add(record)
        return (time.perf_counter() - start) / count

    return case


def _confirm_case(store: Any, count: int, counted: bool) -> Callable[[], float]:
    def case() -> float:
        records = _records("c", count, counted)
        for record in records:
            store.add(record)
        start = time.perf_counter()
        for record in records:
            now = time.time()
            store.confirm(record.tracking_id, now=now, lease_until=now + 60, keep_until=now + 600)
        return (time.perf_counter() - start) / count

    return case


def _django_stores(pg_url: str) -> dict[str, Any]:
    """The ``django://`` store on a SQLite file (WAL, as the Django quickstart advises) and
    on PostgreSQL, both databases migrated."""
    from urllib.parse import urlsplit

    from twilio_feedback.django.store import DjangoStore

    pg = urlsplit(pg_url)
    django_databases(
        {
            "insights": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": f"{tempfile.mkdtemp()}/django.db",
                "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"},
            },
            "insights_pg": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": pg.path.lstrip("/"),
                "USER": pg.username or "",
                "HOST": pg.hostname or "",
                "PORT": str(pg.port or ""),
            },
        }
    )
    return {
        "django-sqlite": DjangoStore("insights"),
        "django-postgresql": DjangoStore("insights_pg"),
    }


def run(quick: bool = False) -> Section:
    """Measure and return the section."""
    from twilio_feedback.stores import InsightsStore, store_from_url
    from twilio_feedback.stores.memory import MemoryStore

    redis_server, pg_server = _servers()
    stores = {
        "memory": MemoryStore(),
        "sqlite": store_from_url(f"sqlite:///{tempfile.mkdtemp()}/bench.db"),
        "postgresql": store_from_url(pg_server.fresh_database()),
        "redis": store_from_url(redis_server.url),
        **_django_stores(pg_server.fresh_database()),
    }
    count = 200 if quick else 1_000
    repeats = 3 if quick else 9
    section = Section("Insights bookkeeping per send and per confirm")
    try:
        for name, store in stores.items():
            if not isinstance(store, InsightsStore):
                section.notes.append(f"{name}: the store keeps no insights; not measured.")
                continue
            cases = {
                "add counted": _add_case(store, count, True),
                "add uncounted": _add_case(store, count, False),
                "confirm counted": _confirm_case(store, count, True),
                "confirm uncounted": _confirm_case(store, count, False),
            }
            samples = interleaved(cases, repeats)
            for op in ("add", "confirm"):
                on, off = samples[f"{op} counted"], samples[f"{op} uncounted"]
                ratios = ratio_samples(on, off)
                lo, hi = spread(ratios)
                confirm = op == "confirm"
                verdict = ""
                if confirm:
                    verdict = "met" if median(ratios) <= TARGET else "missed"
                section.figures.append(
                    Figure(
                        f"{name}: {op}, counted / uncounted",
                        f"{median(ratios):.3f}x",
                        f"{lo:.3f}-{hi:.3f}; {median(on) * 1e6:.1f} vs {median(off) * 1e6:.1f} µs",
                        f"<= {TARGET:.2f}x" if confirm else "",
                        verdict,
                    )
                )
            trips = _round_trips_counted(name, store)
            if trips and name.endswith("sqlite"):
                # In process: statements of one transaction, no network between them.
                section.figures.append(
                    Figure(
                        f"{name}: statements per counted confirm (one transaction)",
                        str(trips),
                        "in process: no round trip",
                    )
                )
            elif trips:
                section.figures.append(
                    Figure(
                        f"{name}: round trips per counted confirm",
                        str(trips),
                        "",
                        "1",
                        "met" if trips == 1 else "missed",
                    )
                )
    finally:
        for store in stores.values():
            store.close()
        redis_server.stop()
        pg_server.stop()
    section.notes.append(
        f"{count:,} records a sample, {repeats} interleaved rounds; ratios per round, then the "
        "median and interquartile range. Counted records carry a country and a sender (as "
        "send() writes them with Settings.insights on, the default); uncounted ones carry "
        "neither (insights off), so the store counts nothing for them. Confirm counts the "
        "confirmation and its time-to-confirm bucket; add counts the send."
    )
    return section


def _round_trips_counted(name: str, store: Any) -> int:
    """Round trips of a confirm whose record is counted (network stores only)."""
    from twilio_feedback import Record

    now = time.time()
    record = Record(
        "rt",
        expires_at=now + 60,
        message_sid="SM" + "a" * 32,
        created_at=now,
        country="US",
        sender=SENDER,
    )
    if name.startswith("django"):
        from django.db import connections

        store.add(record)
        seen: list[str] = []

        def count(execute: Any, sql: str, *args: Any) -> Any:
            seen.append(sql)
            return execute(sql, *args)

        with connections[store.alias].execute_wrapper(count):
            store.confirm("rt", now=now, lease_until=now + 60, keep_until=now + 60)
        return len(seen)
    return _round_trips(name, store, record)
