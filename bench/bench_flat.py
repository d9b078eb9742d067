"""Costs stay flat as the store grows: 1,000 vs 1,000,000 records in each store.

For PostgreSQL, SQLite, Redis and the ``django://`` store on SQLite (and the memory store,
for the confirm only), a small
store (1,000 records) and a large one (1,000,000; 100,000 with --quick) side by side:

- confirm latency (``store.confirm``), on records just written and, in the large store,
  on records picked at random among the million (a click on any message of the last days);
- claim latency (``store.claim``, 100 a call) with nothing else in the outbox, and with
  100,000 confirmations waiting in it (a backlog after a Twilio outage);
- purge time per 10,000 expired records (``store.purge``);
- confirm latency while a purge of a large expired set runs (does it stall confirms?);
- startup of a tracker on the full store (constructor, first confirm, first sweep and
  purge of its reporter).

Records are written in bulk as ``store.add`` writes them (:mod:`bench.fill`).
"""

from __future__ import annotations

import os
import random
import secrets
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from . import fill
from .common import Figure, Section, django_databases, median, percentile, spread

SMALL = 1_000
CLAIM_BATCH = 100
RATIO = 1.5
STALL_MS = 10.0
DURABLE = ["postgresql", "sqlite", "redis", "django-sqlite"]
ONLY = os.environ.get("BENCH_FLAT_BACKENDS", "")
"""A comma list of backends to run (``sqlite,postgresql``); empty: all of them."""


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} µs"


def _pcts(values: list[float]) -> str:
    return f"p50 {_us(percentile(values, 50))}, p99 {_us(percentile(values, 99))}"


class Sizes:
    """The loads of one run (full or quick)."""

    def __init__(self, quick: bool) -> None:
        self.large = 100_000 if quick else 1_000_000
        self.confirms = 200 if quick else 500  # per case and round
        self.claims = 10 if quick else 20  # claim calls per case and round
        self.rounds = 3 if quick else 5
        self.backlog = 100_000 if not quick else 20_000
        self.purge_small = 5_000 if quick else 10_000
        self.purge_large = 20_000 if quick else 100_000
        self.stall_set = 50_000 if quick else 300_000


def _stores(backend: str, redis_server: Any, pg_server: Any) -> tuple[str, str]:
    if backend == "postgresql":
        return pg_server.fresh_database(), pg_server.fresh_database()
    if backend == "sqlite":
        folder = tempfile.mkdtemp(prefix="tf-flat-")
        return f"sqlite:///{folder}/small.db", f"sqlite:///{folder}/large.db"
    if backend == "django-sqlite":
        # As the Django quickstart advises: WAL, synchronous=NORMAL.
        folder = tempfile.mkdtemp(prefix="tf-flat-django-")
        options = {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}
        django_databases(
            {
                f"flat_{name}": {
                    "ENGINE": "django.db.backends.sqlite3",
                    "NAME": f"{folder}/{name}.db",
                    "OPTIONS": options,
                }
                for name in ("small", "large")
            }
        )
        return "django://flat_small", "django://flat_large"
    base = redis_server.url.rsplit("/", 1)[0]
    return f"{base}/1", f"{base}/2"


def _open(backend: str, url: str, size: int) -> Any:
    if backend == "memory":
        from twilio_feedback.stores.memory import MemoryStore

        return MemoryStore(maxsize=size * 2 + 100_000)
    from twilio_feedback.stores import store_from_url

    return store_from_url(url)


def _timed_confirms(store: Any, ids: list[str]) -> list[float]:
    times = []
    for tracking_id in ids:
        now = time.time()
        start = time.perf_counter()
        won, _ = store.confirm(tracking_id, now=now, lease_until=now + 60, keep_until=now + 600)
        times.append(time.perf_counter() - start)
        assert won, tracking_id
    return times


def _fresh(store: Any, count: int, **kind: Any) -> list[str]:
    issued = list(fill.records(count, **kind))
    fill.bulk_add(store, issued)
    return [item.record.tracking_id for item in issued]


def _claims(store: Any, calls: int) -> list[float]:
    _fresh(store, calls * CLAIM_BATCH, state="confirmed")
    times = []
    for _ in range(calls):
        now = time.time()
        start = time.perf_counter()
        got = store.claim(now=now, lease_until=now + 3600, limit=CLAIM_BATCH)
        times.append(time.perf_counter() - start)
        assert len(got) == CLAIM_BATCH, len(got)
    return times


def _ratio_figure(
    section: Section, label: str, small: list[list[float]], large: list[list[float]], what: str
) -> None:
    ratios = [median(b) / median(a) for a, b in zip(small, large, strict=True)]
    lo, hi = spread(ratios)
    flat_small = [x for r in small for x in r]
    flat_large = [x for r in large for x in r]
    section.figures.append(
        Figure(
            label,
            f"{median(ratios):.2f}x",
            f"{lo:.2f}-{hi:.2f}; small {_pcts(flat_small)}; {what} {_pcts(flat_large)}",
            f"<= {RATIO}x",
            "met" if median(ratios) <= RATIO else "missed",
        )
    )


def _backend(
    backend: str, sizes: Sizes, servers: tuple[Any, Any], fake: Any, section: Section
) -> None:
    small_url, large_url = _stores(backend, *servers) if backend != "memory" else ("", "")
    key = secrets.token_urlsafe(32)
    signer = fill.signer(key)
    sids = fake.add_messages(1_000)  # so that the startup's confirm is reported, not refused
    small, large = _open(backend, small_url, SMALL), _open(backend, large_url, sizes.large)
    try:
        filled: dict[str, list[str]] = {}
        tokens: dict[str, list[str]] = {}
        started = time.perf_counter()
        for name, store, count in (("small", small, SMALL), ("large", large, sizes.large)):
            issued = fill.records(count, token_signer=signer, sids=sids)
            ids: list[str] = []
            kept: list[str] = []

            def tap(items: Any, ids: list[str] = ids, kept: list[str] = kept) -> Any:
                for item in items:
                    ids.append(item.record.tracking_id)
                    if len(kept) < 5:
                        kept.append(item.token)
                    yield item

            how = fill.bulk_add(store, tap(issued))
            filled[name], tokens[name] = ids, kept
        fill_seconds = time.perf_counter() - started
        old = random.sample(filled["large"][5:], sizes.confirms * sizes.rounds)

        # Startup, on the stores as filled (before anything else changes them).
        if backend != "memory":
            for name, url in (("small", small_url), ("large", large_url)):
                section.notes.append(_startup(backend, name, url, key, tokens[name][0], fake))

        # Confirm.
        samples: dict[str, list[list[float]]] = {"small": [], "large": [], "old": []}
        for r in range(sizes.rounds):
            cases: list[tuple[str, Callable[[], list[float]]]] = [
                ("small", lambda: _timed_confirms(small, _fresh(small, sizes.confirms))),
                ("large", lambda: _timed_confirms(large, _fresh(large, sizes.confirms))),
                (
                    "old",
                    lambda r=r: _timed_confirms(
                        large, old[r * sizes.confirms : (r + 1) * sizes.confirms]
                    ),
                ),
            ]
            shift = r % len(cases)
            for name, case in cases[shift:] + cases[:shift]:
                samples[name].append(case())
        size = f"{sizes.large:,}"
        _ratio_figure(
            section,
            f"{backend}: confirm, {size} / {SMALL:,} records (fresh records)",
            samples["small"],
            samples["large"],
            "large",
        )
        _ratio_figure(
            section,
            f"{backend}: confirm, {size} (random old records) / {SMALL:,}",
            samples["small"],
            samples["old"],
            "large, old records",
        )
        if backend == "memory":
            section.notes.append(
                f"memory: {SMALL:,} and {sizes.large:,} records filled in {fill_seconds:.0f} s "
                f"by {how}."
            )
            return

        # Claim: empty outbox, then a backlog waiting in the large store's.
        claims: dict[str, list[list[float]]] = {
            "small": [],
            "large": [],
            "small2": [],
            "backlog": [],
        }
        for r in range(sizes.rounds):
            pair = [("small", small), ("large", large)]
            for name, store in pair if r % 2 == 0 else pair[::-1]:
                claims[name].append(_claims(store, sizes.claims))
        _fresh(large, sizes.backlog, state="confirmed")
        for r in range(sizes.rounds):
            pair = [("small2", small), ("backlog", large)]
            for name, store in pair if r % 2 == 0 else pair[::-1]:
                claims[name].append(_claims(store, sizes.claims))
        _ratio_figure(
            section,
            f"{backend}: claim of {CLAIM_BATCH}, {size} / {SMALL:,} records, outbox empty",
            claims["small"],
            claims["large"],
            "large",
        )
        _ratio_figure(
            section,
            f"{backend}: claim of {CLAIM_BATCH}, {size} records with {sizes.backlog:,} "
            f"waiting / {SMALL:,}",
            claims["small2"],
            claims["backlog"],
            "large with a backlog",
        )

        # Purge.
        rates = []
        for name, store, count in (
            ("small", small, sizes.purge_small),
            ("large", large, sizes.purge_large),
        ):
            _fresh(store, count, state="confirmed", expired=True)
            start = time.perf_counter()
            purged = store.purge(now=time.time())
            elapsed = time.perf_counter() - start
            rates.append(
                f"{name} {elapsed / max(purged, 1) * 10_000 * 1000:.1f} ms ({purged:,} purged)"
            )
        section.figures.append(
            Figure(
                f"{backend}: purge, time per 10,000 expired records",
                rates[0].split(" (")[0].replace("small ", ""),
                "; ".join(rates),
                "batched, flat",
            )
        )
        _stall(backend, large, sizes, section)
        section.notes.append(
            f"{backend}: {SMALL:,} and {sizes.large:,} records filled in {fill_seconds:.0f} s "
            f"by {how}."
        )
    finally:
        small.close()
        large.close()


def _stall(backend: str, store: Any, sizes: Sizes, section: Section) -> None:
    """Confirms every 2 ms from a thread while a purge of a large expired set runs."""
    targets = _fresh(store, 30_000 if sizes.stall_set > 100_000 else 8_000)
    if backend == "redis":
        expiring = _fresh(store, sizes.stall_set, state="confirmed")
        client = store.client
        base = client.dbsize() - len(expiring)
    else:
        _fresh(store, sizes.stall_set, state="confirmed", expired=True)
    log: list[tuple[float, float]] = []
    failed: list[tuple[float, str]] = []
    stop = threading.Event()

    def confirming() -> None:
        for tracking_id in targets:
            if stop.is_set():
                return
            now = time.time()
            start = time.perf_counter()
            try:
                store.confirm(tracking_id, now=now, lease_until=now + 60, keep_until=now + 600)
            except Exception as exc:  # SQLite: "database is locked" past its busy timeout
                failed.append((start, f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"))
            log.append((start, time.perf_counter() - start))
            time.sleep(max(0.0, 0.002 - (time.perf_counter() - start)))

    thread = threading.Thread(target=confirming, daemon=True)
    windows: dict[str, tuple[float, float]] = {}
    if backend == "redis":
        # Every key of the set expires at one instant, far enough ahead for the commands
        # to be sent (a key whose time has passed when its command arrives is deleted
        # then: Redis' own deletion all the same); Redis deletes them by itself.
        thread.start()
        time.sleep(0.5)
        at = int((time.time() + 2.0 + len(expiring) / 20_000) * 1000)
        pipe = client.pipeline(transaction=False)
        for n, tracking_id in enumerate(expiring, 1):
            pipe.pexpireat(store.key(tracking_id), at)
            if n % 5000 == 0:
                pipe.execute()
        pipe.execute()
        while time.time() * 1000 < at:
            time.sleep(0.01)
        expiry_start = time.perf_counter()
        deadline = time.monotonic() + 300
        while client.dbsize() > base + 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        windows["Redis deleting the expired keys itself"] = (expiry_start, time.perf_counter())
    else:
        thread.start()
        time.sleep(0.5)
    purge_start = time.perf_counter()
    purged = store.purge(now=time.time())
    windows[f"store.purge() ({purged:,} purged)"] = (purge_start, time.perf_counter())
    time.sleep(0.5)
    stop.set()
    thread.join()
    first = min(start for start, _ in windows.values())
    baseline = [lat for at_, lat in log if at_ < first - 0.05]
    for label, (start, end) in windows.items():
        during = [lat for at_, lat in log if start <= at_ <= end]
        errors = sorted({why for at_, why in failed if start <= at_ <= end})
        if not during:
            continue
        worst = max(during) * 1000
        lost = sum(1 for at_, _ in failed if start <= at_ <= end)
        section.figures.append(
            Figure(
                f"{backend}: confirm while purging {sizes.stall_set:,} expired records: {label}",
                f"max {worst:.1f} ms, p99 {percentile(during, 99) * 1000:.1f} ms",
                f"{end - start:.2f} s, {len(during):,} confirms; before it: "
                + (
                    f"p99 {percentile(baseline, 99) * 1000:.1f} ms, max "
                    f"{max(baseline) * 1000:.1f} ms"
                    if baseline
                    else "none measured"
                ),
                f"no stall > {STALL_MS:g} ms",
                "met"
                if worst <= STALL_MS and not lost
                else "missed"
                + (f": {lost} confirm(s) failed, {'; '.join(errors)}" if lost else ""),
            )
        )


def _startup(backend: str, name: str, url: str, key: str, token: str, fake: Any) -> str:
    from twilio_feedback import FeedbackTracker, Settings
    from twilio_feedback.stores import store_from_url

    store = store_from_url(url)
    seen: dict[str, float] = {}
    done = threading.Event()

    def timed(op: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seen.setdefault(op, time.perf_counter() - start)
                if op == "purge":
                    done.set()

        return call

    store.claim = timed("claim", store.claim)  # type: ignore[method-assign]
    store.purge = timed("purge", store.purge)  # type: ignore[method-assign]
    settings = Settings(
        account_sid=fake.account_sid,
        auth_token=fake.auth_token,
        api_base_url=fake.base_url,
        secret_key=key,
        store=store,
    )
    start = time.perf_counter()
    tracker = FeedbackTracker(settings)
    built = time.perf_counter() - start
    result = tracker.confirm_token(token)
    first = time.perf_counter() - start
    done.wait(300)
    ready = time.perf_counter() - start
    tracker.close()
    assert result.status == "confirmed", result
    return (
        f"{backend}, startup on the {name} store: FeedbackTracker() {built * 1000:.1f} ms, first "
        f"confirm answered at {first * 1000:.1f} ms; the reporter's first sweep (claim) took "
        f"{seen.get('claim', 0) * 1000:.1f} ms and first purge {seen.get('purge', 0) * 1000:.1f} "
        f"ms, both done {ready * 1000:.0f} ms after start (in its thread: requests do not wait)."
    )


def run(quick: bool = False) -> Section:
    """Measure and return the section."""
    from twilio_feedback.testing import FakeTwilio

    from .bench_stores import _servers

    sizes = Sizes(quick)
    section = Section(f"Flat costs: {SMALL:,} vs {sizes.large:,} records")
    started = time.perf_counter()
    servers = _servers()
    try:
        with FakeTwilio() as fake:
            for backend in ["memory", *DURABLE]:
                if ONLY and backend not in ONLY.split(","):
                    continue
                print(f"  flat: {backend}", flush=True)
                _backend(backend, sizes, servers, fake, section)
    finally:
        for server in servers:
            server.stop()
    section.notes += [
        f"Confirm: {sizes.rounds} interleaved rounds of {sizes.confirms} `store.confirm` calls "
        "per case (one at a time, from one thread); fresh records are written just before "
        "their round, old ones picked at random among the large store's first fill. The "
        "ratio is the median over rounds of the round's median large / median small.",
        f"Claim: `store.claim(limit={CLAIM_BATCH})` calls, {sizes.claims} per case and round, "
        f"on confirmed records whose lease ended, written before the round; the backlog is "
        f"{sizes.backlog:,} more such records, all due, in the large store.",
        "Purge: expired confirmed records (with a SID), then one `store.purge()`. In Redis "
        "the records' keys are gone as soon as they expire (Redis deletes them itself); "
        "`purge()` drops the outbox entries they leave behind. While purging: a thread "
        "confirms every 2 ms on the same store object; in Redis the whole set is made to "
        "expire at one instant (`PEXPIREAT`), and Redis' own deletion of it is timed too.",
        "PostgreSQL with fsync=off, SQLite (the SQL store's and Django's) in WAL mode with "
        "synchronous=NORMAL, Redis "
        "without persistence; small and large stores are separate databases (Redis: "
        "databases 1 and 2 of one server).",
        f"{time.perf_counter() - started:.0f} s for this section.",
    ]
    return section
