"""OpenTelemetry metrics: a scripted run read back through the SDK's in-memory reader, the
library without opentelemetry installed, and an SDK configured after the trackers exist.

The scripted run drives real parts: the WSGI middleware in process, FakeTwilio over HTTP, a
Redis server stopped and started for the store outage.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from werkzeug.test import Client

from twilio_feedback import ConfirmResult, FeedbackTracker, Settings, telemetry
from twilio_feedback.stores.memory import MemoryStore
from twilio_feedback.testing import Delay, FakeTwilio
from twilio_feedback.tokens import TokenSigner
from twilio_feedback.wsgi import FeedbackMiddleware

from .apps import wsgi_app
from .conftest import CHROME, SECRET_KEY
from .servers import RedisServer, wait_until

ROOT = Path(__file__).resolve().parents[1]
SLACK = "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"
UNKNOWN_SID = "SM" + "0" * 32  # FakeTwilio answers 404 for feedback on it
Key = tuple[str, frozenset[tuple[str, Any]]]


# --8<-- [start:reader]
@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    """The library's instruments on an SDK provider of this test, read in memory."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    telemetry.use_meter_provider(provider)
    yield reader
    telemetry.use_meter_provider(None)
    provider.shutdown()


# --8<-- [end:reader]


def _points(reader: InMemoryMetricReader) -> dict[Key, Any]:
    """Every data point of the library's meter, by (instrument, attributes): a number for
    counters, the data point itself for histograms."""
    found: dict[Key, Any] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            if scope.scope.name != telemetry.METER_NAME:
                continue
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    key = (metric.name, frozenset(point.attributes.items()))
                    assert isinstance(point, NumberDataPoint | HistogramDataPoint)
                    found[key] = point.value if isinstance(point, NumberDataPoint) else point
    return found


def _counts(points: dict[Key, Any], name: str, by: str | None = None) -> dict[str, int]:
    """A counter's values by its one listed attribute's value ("" when it has none), or by
    ``by`` (any attribute: ``country``), summed over the others; zeros left out."""
    out: dict[str, int] = {}
    for (metric, attributes), value in points.items():
        if metric == name and not isinstance(value, HistogramDataPoint) and value:
            named = dict(attributes)
            if by is None:
                label = ",".join(str(v) for k, v in sorted(attributes) if k != "country")
            else:
                label = str(named.get(by, ""))
            out[label] = out.get(label, 0) + int(value)
    return out


def _settings(fake: FakeTwilio, store: Any, **extra: Any) -> Settings:
    return Settings(
        account_sid=fake.account_sid,
        auth_token=fake.auth_token,
        secret_key=SECRET_KEY,
        store=store,
        api_base_url=fake.base_url,
        request_timeout=5.0,
        **extra,
    )


@pytest.mark.redis
@pytest.mark.timeout(60)
def test_a_scripted_run_shows_exactly_its_counts(
    reader: InMemoryMetricReader, fake_twilio: FakeTwilio
) -> None:
    n = 3
    redis = RedisServer(persistent=True)
    main = FeedbackTracker(_settings(fake_twilio, redis.url, deferred_size=n))
    # One worker and a queue of one: the third confirmation while Twilio holds the first
    # post cannot be queued.
    narrow = FeedbackTracker(
        _settings(
            fake_twilio,
            MemoryStore(),
            reporter_concurrency=1,
            queue_size=1,
            lease_seconds=1.0,
            sweep_interval=0.2,
        )
    )
    client = Client(FeedbackMiddleware(wsgi_app, main))

    def visit(token: str | None, method: str = "GET", agent: str = CHROME) -> str:
        url = "/confirm" if token is None else f"/confirm?id={token}"
        response = client.open(url, method=method, headers={"User-Agent": agent})
        assert response.status_code == 200
        return str(response.get_json()["status"])

    def bound(count: int, tracker: FeedbackTracker = main) -> list[str]:
        tickets = [tracker.ticket() for _ in range(count)]
        for ticket, sid in zip(tickets, fake_twilio.add_messages(count), strict=True):
            tracker.bind(ticket, sid)
        return [t.token for t in tickets]

    try:
        fake_twilio.fail_next(503)  # the first report is retried once
        tokens = bound(n)
        assert [visit(t) for t in tokens] == ["confirmed"] * n
        assert [visit(t) for t in tokens] == ["duplicate"] * n
        assert [visit(tokens[0], method=m) for m in ("HEAD", "OPTIONS")] == ["ignored"] * 2
        assert visit(tokens[0], agent=SLACK) == "ignored"
        forged = tokens[0][:-2] + ("AA" if not tokens[0].endswith("AA") else "BB")
        assert [visit(t) for t in (None, forged, "x" * 40)] == ["invalid"] * n
        old = TokenSigner(SECRET_KEY, timer=lambda: time.time() - 30 * 86400)
        assert [visit(old.issue()[1]) for _ in range(n)] == ["expired"] * n
        assert [visit(main.ticket().token) for _ in range(n)] == ["unknown"] * n
        refused = main.ticket()
        main.bind(refused, UNKNOWN_SID)
        assert visit(refused.token) == "confirmed"  # Twilio answers 404: failed
        assert main.flush(10) == 0

        later = bound(2 * n)
        redis.halt()
        assert [visit(t) for t in later] == ["deferred"] * n + ["error"] * n
        redis.start()
        wait_until(lambda: main.stats()["replayed"] == n, 20, "deferred confirmations applied")
        assert main.flush(10) == 0

        fake_twilio.fail_next(Delay(2.0))
        held, queued, dropped = bound(3, narrow)
        assert narrow.confirm_token(held).confirmed
        assert fake_twilio.wait_for(lambda: fake_twilio.in_flight == 1)
        assert narrow.confirm_token(queued).confirmed
        assert narrow.confirm_token(dropped).confirmed  # queue full: left for the sweep
        assert _counts(_points(reader), telemetry.PENDING.name) == {"": 2}
        wait_until(lambda: narrow.stats()["reported"] == 3, 20, "the sweep reporting the drop")
        assert narrow.flush(10) == 0
    finally:
        narrow.close(timeout=2)
        main.close(timeout=2)
        redis.stop()

    points = _points(reader)
    assert _counts(points, telemetry.CONFIRMATIONS.name) == {
        "confirmed": n + 1 + 3,
        "duplicate": n,
        "ignored": n,
        "invalid": n,
        "expired": n,
        "unknown": n,
        "deferred": n,
        "error": n,
    }
    assert _counts(points, telemetry.REPORTS.name) == {"": n + n + 3}
    assert _counts(points, telemetry.RETRIES.name) == {"5xx": 1}
    assert _counts(points, telemetry.FAILURES.name) == {"refused": 1}
    assert _counts(points, telemetry.DROPS.name) == {"reports": 1, "deferred": n}
    assert _counts(points, telemetry.PENDING.name) == {}
    durations = {
        dict(attributes).get("error.type", ""): point
        for (name, attributes), point in points.items()
        if name == telemetry.DURATION.name
    }
    assert {kind: p.count for kind, p in durations.items()} == {"": n + n + 3, "5xx": 1, "4xx": 1}
    assert durations[""].max >= 2.0  # the post Twilio held for 2 s
    assert durations[""].explicit_bounds == telemetry.DURATION_BUCKETS
    # Counts match what the trackers counted themselves.
    stats = Counter(main.stats()) + Counter(narrow.stats())
    for outcome, count in _counts(points, telemetry.CONFIRMATIONS.name).items():
        assert stats[outcome] == count or outcome == "ignored", outcome
    assert stats["reported"] == n + n + 3
    assert stats["dropped"] == 1
    assert stats["deferred_dropped"] == n


def test_attributes_take_only_their_listed_values(
    reader: InMemoryMetricReader, tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    ticket = tracker.ticket()
    tracker.bind(ticket, fake_twilio.add_messages(1)[0])
    fake_twilio.fail_next(429, 500)
    assert tracker.confirm_token(ticket.token).confirmed
    assert tracker.confirm_token(ticket.token + "x").status == "invalid"
    assert tracker.flush(10) == 0
    points = _points(reader)
    specs = {i.name: i for i in telemetry.INSTRUMENTS}
    assert {name for name, _ in points} <= set(specs)
    for name, attributes in points:
        allowed = specs[name].attributes
        for key, value in attributes:
            if key in specs[name].open_attributes:
                assert re.fullmatch("[A-Z]{2}", str(value)), (name, key, value)
            else:
                assert value in allowed[key], (name, key, value)
    assert _counts(points, telemetry.RETRIES.name) == {"429": 1, "5xx": 1}


def test_confirmations_carry_the_country_of_the_message(
    reader: InMemoryMetricReader, tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    sids = fake_twilio.add_messages(3)
    tickets = [tracker.ticket() for _ in sids]
    tracker.bind(tickets[0], sids[0], country="FR")
    tracker.bind(tickets[1], sids[1], country="FR")
    tracker.bind(tickets[2], sids[2])  # unknown: XX
    assert all(tracker.confirm_token(ticket.token).country for ticket in tickets)
    assert tracker.confirm_token(tickets[0].token).status == "duplicate"
    assert tracker.confirm_token(tracker.ticket().token).status == "unknown"

    def by_country(outcome: str) -> dict[str, int]:
        points = {
            key: value for key, value in _points(reader).items() if ("outcome", outcome) in key[1]
        }
        return _counts(points, telemetry.CONFIRMATIONS.name, by="country")

    assert by_country("confirmed") == {"FR": 2, "XX": 1}
    assert by_country("duplicate") == {"FR": 1}
    assert by_country("unknown") == {"": 1}  # no record: no country
    assert tracker.flush(10) == 0


def test_instruments_follow_the_naming_conventions() -> None:
    names = [i.name for i in telemetry.INSTRUMENTS]
    assert len(set(names)) == len(names)
    for instrument in telemetry.INSTRUMENTS:
        assert instrument.name.startswith("twilio_feedback.")
        assert not instrument.name.endswith(("_total", ".total", ".count"))
        assert instrument.unit == "s" or (
            instrument.unit.startswith("{") and instrument.unit.endswith("}")
        )
        assert instrument.description
        # A metric name is never also a namespace of another one.
        assert not any(other.startswith(instrument.name + ".") for other in names)
    assert telemetry.CONFIRMATIONS.attributes["outcome"] == (
        "confirmed",
        "duplicate",
        "deferred",
        "ignored",
        "invalid",
        "expired",
        "unknown",
        "error",
    )


def _run(code: str, fake: FakeTwilio, *, block_otel: bool = False) -> str:
    """Run ``code`` in a fresh interpreter with ``tracker`` built on the emulator."""
    prelude = ""
    if block_otel:
        prelude = textwrap.dedent(
            """
            import sys

            class NoOpenTelemetry:
                def find_spec(self, name, path=None, target=None):
                    if name.split(".")[0] == "opentelemetry":
                        raise ImportError(f"No module named {name!r}")

            sys.meta_path.insert(0, NoOpenTelemetry())
            """
        )
    setup = textwrap.dedent(
        f"""
        from twilio_feedback import FeedbackTracker, Settings
        from twilio_feedback.stores.memory import MemoryStore

        tracker = FeedbackTracker(Settings(
            account_sid={fake.account_sid!r}, auth_token={fake.auth_token!r},
            secret_key={SECRET_KEY!r}, store=MemoryStore(), api_base_url={fake.base_url!r},
        ))
        sids = {fake.add_messages(4)!r}

        def confirm_one():
            ticket = tracker.ticket()
            tracker.bind(ticket, sids.pop())
            assert tracker.confirm_token(ticket.token).confirmed
            assert tracker.flush(5) == 0
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", prelude + setup + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_the_library_works_without_opentelemetry(fake_twilio: FakeTwilio) -> None:
    out = _run(
        """
        from twilio_feedback import telemetry

        confirm_one()
        confirm_one()
        assert not telemetry.enabled()
        assert not any(name.startswith("opentelemetry") for name in sys.modules)
        print(tracker.stats()["reported"])
        """,
        fake_twilio,
        block_otel=True,
    )
    assert out.split() == ["2"]
    assert len(fake_twilio.feedback) == 2


@pytest.mark.slow
def test_records_are_no_ops_until_the_app_configures_an_sdk(fake_twilio: FakeTwilio) -> None:
    out = _run(
        """
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        from twilio_feedback import telemetry

        confirm_one()  # reported through the API's no-op: not counted
        assert telemetry.enabled()
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        confirm_one()
        confirm_one()
        for resource in reader.get_metrics_data().resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        if hasattr(point, "value"):
                            print(metric.name, dict(point.attributes), point.value)
        """,
        fake_twilio,
    )
    lines = out.splitlines()
    # Confirm outcomes are counted from the first tracker on, whenever the SDK comes.
    assert "twilio_feedback.confirmations {'outcome': 'confirmed', 'country': 'XX'} 3" in lines
    assert "twilio_feedback.confirmations {'outcome': 'ignored'} 0" in lines
    assert "twilio_feedback.reports {} 2" in lines
    assert "twilio_feedback.report.pending {} 0" in lines


def test_a_hook_costs_one_check_when_metrics_are_off(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("_confirmations", "_reports", "_retries", "_failures", "_drops", "_duration"):
        monkeypatch.setattr(telemetry, name, None)
    result = ConfirmResult("confirmed")
    assert telemetry.confirm_outcome(result) is result
    assert not telemetry.enabled()

    @telemetry.timed_post
    def post(x: int) -> int:
        return x + 1

    assert post(1) == 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_counts_its_own_confirmations(reader: InMemoryMetricReader) -> None:
    invalid = ConfirmResult("invalid")
    telemetry.confirm_outcome(invalid)
    telemetry.confirm_outcome(invalid)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        telemetry.confirm_outcome(invalid)
        counts = _counts(_points(reader), telemetry.CONFIRMATIONS.name)
        os.write(write, b"1" if counts == {"invalid": 1} else b"0")
        os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.waitpid(pid, 0)
    assert _counts(_points(reader), telemetry.CONFIRMATIONS.name) == {"invalid": 2}
