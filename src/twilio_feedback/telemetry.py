"""OpenTelemetry metrics, through ``opentelemetry-api`` only.

The library never configures OpenTelemetry. It asks the API for a meter named
``twilio_feedback`` and records into it: until the application configures an SDK (a
``MeterProvider`` with a reader or an exporter), records go nowhere, and without
``opentelemetry-api`` installed (``pip install 'twilio-feedback[otel]'`` adds it) nothing
is imported and each hook is one check of a module global. The API is imported when the
first tracker is built, not when ``twilio_feedback`` is.

:data:`INSTRUMENTS` lists what is recorded. Attributes are low-cardinality by design: a
fixed set of values each, never a SID, tracking id or phone number. Counts are per
process; a backend sums them across processes.

The hooks (:func:`confirm_outcome`, :func:`reported`, :func:`retried`, :func:`failed`,
:func:`dropped`, :func:`watch`, :func:`timed_post`) are called by the library's own
modules, one call where each of them counts.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
import typing
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

from .errors import FeedbackError
from .lifecycle import ProcessLocal
from .records import ConfirmStatus

if TYPE_CHECKING:
    from opentelemetry.metrics import (
        CallbackOptions,
        Counter,
        Histogram,
        MeterProvider,
        Observation,
    )

    from .records import ConfirmResult
    from .reporter import Reporter

__all__ = [
    "CONFIRMATIONS",
    "DROPS",
    "DURATION",
    "FAILURES",
    "INSTRUMENTS",
    "METER_NAME",
    "PENDING",
    "REPORTS",
    "RETRIES",
    "Instrument",
    "confirm_outcome",
    "dropped",
    "enabled",
    "error_type",
    "failed",
    "reported",
    "retried",
    "timed_post",
    "use_meter_provider",
    "watch",
]

METER_NAME = "twilio_feedback"
"""The name of the library's meter (its instrumentation scope)."""

Queue = Literal["reports", "deferred"]


@dataclass(frozen=True, slots=True)
class Instrument:
    """One instrument the library records into: its name, kind, unit (UCUM, as the
    OpenTelemetry semantic conventions ask), what it measures, each attribute with
    every value it can take, and the attributes whose values are codes from a bounded set
    (``open_attributes``: attribute -> what its values are)."""

    name: str
    kind: str
    unit: str
    description: str
    attributes: Mapping[str, tuple[str, ...]]
    open_attributes: Mapping[str, str] = dataclasses.field(default_factory=dict)


CONFIRMATIONS = Instrument(
    "twilio_feedback.confirmations",
    "ObservableCounter",
    "{confirmation}",
    "Confirmation attempts by outcome: `ignored` from the middleware's screening "
    "(methods that never confirm, link previews), the others from the confirm step. "
    "`country` is set where the store knows the message (`confirmed`, `duplicate`, and "
    "`expired` records), so that a dashboard can plot confirmations per country.",
    {"outcome": typing.get_args(ConfirmStatus)},
    {"country": "the destination's ISO 3166 alpha-2 code, `XX` when unknown"},
)
REPORTS = Instrument(
    "twilio_feedback.reports",
    "Counter",
    "{report}",
    "Feedback reports Twilio accepted (records now `reported`).",
    {},
)
RETRIES = Instrument(
    "twilio_feedback.report.retries",
    "Counter",
    "{retry}",
    "Feedback posts that failed and will be tried again, by reason: `network` (no answer, "
    "a timeout, 408 or 425), `5xx`, `429` (rate limited), `credentials` (401 or 403: "
    "the operator's to fix).",
    {"reason": ("network", "5xx", "429", "credentials")},
)
FAILURES = Instrument(
    "twilio_feedback.report.failures",
    "Counter",
    "{report}",
    "Reports given up (records now `failed`), by reason: `refused` (a 4xx Twilio will not "
    "change its mind on) or `retry_window` (still failing when the retry window ended).",
    {"reason": ("refused", "retry_window")},
)
DROPS = Instrument(
    "twilio_feedback.drops",
    "Counter",
    "{item}",
    "Items a full (or closed) in-memory queue could not take: `reports` (the confirmation "
    "stays in the store, where the outbox sweep finds it) or `deferred` (a confirmation "
    "made while the store was down, answered `error` and lost).",
    {"queue": typing.get_args(Queue)},
)
PENDING = Instrument(
    "twilio_feedback.report.pending",
    "ObservableUpDownCounter",
    "{report}",
    "Reports this process holds: queued, in flight, or waiting for a retry.",
    {},
)
DURATION = Instrument(
    "twilio_feedback.report.duration",
    "Histogram",
    "s",
    "Duration of each feedback POST to Twilio, answer read; `error.type` is set when it "
    "failed: `network`, `5xx`, `429`, `credentials`, `4xx`.",
    {"error.type": ("network", "5xx", "429", "credentials", "4xx", "_OTHER")},
)
INSTRUMENTS = (CONFIRMATIONS, REPORTS, RETRIES, FAILURES, DROPS, PENDING, DURATION)
"""Every instrument, as the Metrics and logs page lists them."""

# The buckets the HTTP semantic conventions advise for request durations, in seconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)


def _attributes(instrument: Instrument) -> dict[str, Mapping[str, str]]:
    """One attribute mapping per value, built once: the hot path allocates nothing."""
    if not instrument.attributes:
        return {}
    ((key, values),) = instrument.attributes.items()
    return {value: {key: value} for value in values}


_OUTCOME = _attributes(CONFIRMATIONS)
_RETRY_REASON = _attributes(RETRIES)
_FAILURE_REASON = _attributes(FAILURES)
_QUEUE = _attributes(DROPS)
_ERROR_TYPE = _attributes(DURATION)
_NONE: Mapping[str, str] = {}
_WITH_COUNTRY: dict[tuple[str, str], Mapping[str, str]] = {}


class _Outcomes(ProcessLocal):
    """Confirm outcomes counted in this process, for an observable counter: on the
    request path a confirmation costs a lock and an addition, where an SDK counter's
    ``add()`` costs several microseconds. A forked child starts from zero."""

    def _init_state(self) -> None:
        super()._init_state()
        self.lock = threading.Lock()
        # (outcome, country or None) -> count; every outcome observed from zero.
        self.counts: dict[tuple[str, str | None], int] = {
            (outcome, None): 0 for outcome in CONFIRMATIONS.attributes["outcome"]
        }

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        self._check_pid()
        with self.lock:
            observed = list(self.counts.items())
        for (outcome, country), count in observed:
            attributes = _OUTCOME[outcome]
            if country is not None:
                attributes = _WITH_COUNTRY.get((outcome, country)) or _WITH_COUNTRY.setdefault(
                    (outcome, country), {**attributes, "country": country}
                )
            yield Observation(count, attributes)


# The instruments in use, or None while metrics are off (no opentelemetry-api, or no
# tracker built yet). Each hook reads one of them once: a swap by use_meter_provider()
# is seen whole.
_confirmations: _Outcomes | None = None
_reports: Counter | None = None
_retries: Counter | None = None
_failures: Counter | None = None
_drops: Counter | None = None
_duration: Histogram | None = None

_lock = threading.Lock()
_loaded = False
_global: tuple[Any, ...] | None = None  # the global provider's instruments, made once
_reporters: weakref.WeakSet[Reporter] = weakref.WeakSet()


def enabled() -> bool:
    """Whether the library records metrics: ``opentelemetry-api`` is installed (and a
    tracker was built). Records go nowhere until an SDK is configured."""
    return _confirmations is not None


def use_meter_provider(provider: MeterProvider | None) -> None:
    """Record into ``provider`` instead of the global meter provider; ``None`` goes back
    to the global one.

    For an application that keeps the library's metrics apart, and for tests (an SDK
    ``MeterProvider`` with an ``InMemoryMetricReader``). Most applications only call
    ``opentelemetry.metrics.set_meter_provider()``, before or after building trackers.
    """
    global _loaded, _global
    with _lock:
        _loaded = True
        if provider is not None:
            _install(_make(provider))
            return
        if _global is None:
            try:
                from opentelemetry import metrics
            except ImportError:
                return
            _global = _make(metrics.get_meter_provider())
        _install(_global)


def _load() -> None:
    """Create the instruments on the global meter provider, once (a no-op without
    ``opentelemetry-api``)."""
    if _loaded:
        return
    use_meter_provider(None)


def _make(provider: MeterProvider) -> tuple[Any, ...]:
    from . import __version__

    meter = provider.get_meter(METER_NAME, __version__)

    def counter(instrument: Instrument) -> Counter:
        return meter.create_counter(instrument.name, instrument.unit, instrument.description)

    confirmations = _Outcomes()
    meter.create_observable_counter(
        CONFIRMATIONS.name,
        [confirmations.observe],
        CONFIRMATIONS.unit,
        CONFIRMATIONS.description,
    )
    meter.create_observable_up_down_counter(
        PENDING.name, [_observe_pending], PENDING.unit, PENDING.description
    )
    return (
        confirmations,
        counter(REPORTS),
        counter(RETRIES),
        counter(FAILURES),
        counter(DROPS),
        meter.create_histogram(
            DURATION.name,
            DURATION.unit,
            DURATION.description,
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        ),
    )


def _install(instruments: tuple[Any, ...]) -> None:
    global _confirmations, _reports, _retries, _failures, _drops, _duration
    _confirmations, _reports, _retries, _failures, _drops, _duration = instruments


def _observe_pending(options: CallbackOptions) -> Iterable[Observation]:
    from opentelemetry.metrics import Observation

    total = 0
    for reporter in list(_reporters):
        if not reporter._closed:
            total += reporter.stats()["pending"]
    yield Observation(total)


# -- the hooks ---------------------------------------------------------------------------


def confirm_outcome(result: ConfirmResult) -> ConfirmResult:
    """Count one confirmation attempt by its outcome; return ``result``."""
    outcomes = _confirmations
    if outcomes is not None and result.status in _OUTCOME:
        key = (result.status, result.country)
        counts = outcomes.counts
        with outcomes.lock:
            counts[key] = counts.get(key, 0) + 1
    return result


def reported() -> None:
    """Count one report Twilio accepted."""
    counter = _reports
    if counter is not None:
        counter.add(1)


def error_type(error: FeedbackError) -> str:
    """The low-cardinality kind of a failed Twilio call: ``network``, ``5xx``, ``429``,
    ``credentials`` or ``4xx``."""
    status = error.status
    if error.credentials:
        return "credentials"
    if status is None:
        return "network"
    if status == 429:
        return "429"
    if status >= 500:
        return "5xx"
    return "network" if error.retryable else "4xx"  # 408, 425: the request did not land


def retried(error: FeedbackError) -> None:
    """Count one failed post that will be tried again, by the kind of ``error``."""
    counter = _retries
    if counter is not None:
        counter.add(1, _RETRY_REASON.get(error_type(error), _NONE))


def failed(error: FeedbackError) -> None:
    """Count one report given up after ``error``."""
    counter = _failures
    if counter is not None:
        reason = "retry_window" if error.retryable else "refused"
        counter.add(1, _FAILURE_REASON[reason])


def dropped(queue: Queue) -> None:
    """Count one item a full or closed in-memory ``queue`` could not take."""
    counter = _drops
    if counter is not None:
        counter.add(1, _QUEUE[queue])


def watch(reporter: Reporter) -> None:
    """Count ``reporter``'s pending reports in :data:`PENDING` while it lives (held
    weakly); loads the instruments on first use."""
    _load()
    _reporters.add(reporter)


P = ParamSpec("P")
R = TypeVar("R")


def timed_post(post: Callable[P, R]) -> Callable[P, R]:
    """Decorate the feedback POST: record its duration in :data:`DURATION`, with
    ``error.type`` when it raised."""

    @functools.wraps(post)
    def timed(*args: P.args, **kwargs: P.kwargs) -> R:
        histogram = _duration
        if histogram is None:
            return post(*args, **kwargs)
        started = time.perf_counter()
        try:
            result = post(*args, **kwargs)
        except Exception as exc:
            kind = error_type(exc) if isinstance(exc, FeedbackError) else "_OTHER"
            histogram.record(time.perf_counter() - started, _ERROR_TYPE[kind])
            raise
        histogram.record(time.perf_counter() - started, _NONE)
        return result

    return timed
