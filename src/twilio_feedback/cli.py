"""The ``twilio-feedback`` command: the demo, the emulator, and an operator's view of a store.

``status`` counts records by state and tells whether delivery keeps up, ``drain``
delivers every unreported confirmation now (through the same reporter an app runs),
``worker`` delivers without rest (a long-running delivery process), ``retry-failed`` gives
failed reports another chance, ``purge`` deletes expired records, ``report`` shows the
conversion insights (a table, JSON, CSV or an HTML page). Every store command
takes ``--store URL`` (default: ``TWILIO_FEEDBACK_STORE``). Exit codes: 0 done, 1 the work
did not complete (a store that cannot be reached, reports left undelivered, a worker
stopped by a second signal), 2 a usage or configuration error, 3 ``status --check``: delivery
is behind.

Framework integrations (``manage.py twilio_feedback``, ``flask twilio-feedback``) run the
same commands with :func:`main`'s ``settings=``: the app's own settings, store included.

``--import MODULE`` (or ``TWILIO_FEEDBACK_IMPORT``) first imports the module that
registers a store scheme of your own with ``register_store()``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

from .errors import ConfigurationError, StorageError, TwilioFeedbackError
from .records import Record, State
from .settings import redact_text, redact_url, safe_excerpt

if TYPE_CHECKING:
    from .insights import Group, Insights
    from .settings import Settings
    from .stores.base import AdminStore, Store

__all__ = ["Progress", "command_names", "main"]

PROG = "twilio-feedback"
STORE_ENV = "TWILIO_FEEDBACK_STORE"
SECRET_ENV = "TWILIO_FEEDBACK_SECRET_KEY"
IMPORT_ENV = "TWILIO_FEEDBACK_IMPORT"


class UsageError(Exception):
    """A mistake on the command line or in the environment: exit code 2."""


class StoreFailure(Exception):
    """The store could not do what was asked: exit code 1."""


BEHIND = 3
"""Exit code of ``status --check`` when delivery is behind (past ``--max-age``)."""


@dataclass(frozen=True)
class _Source:
    """Where a command's store and settings come from: a store URL (``--store`` or the
    environment), or an app's settings handed in by a framework integration."""

    url: str  # shown (redacted) in messages; "" for a Store instance
    settings: Settings | None = None
    store: Store | None = None  # the app's own Store instance, never closed here

    @property
    def shown(self) -> str:
        return redact_url(self.url) if self.url else repr(self.store)


# -- the parser ------------------------------------------------------------------------


def _parser(prog: str = PROG) -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog=prog,
        description="Close Twilio's Message Feedback loop: the demo, and store operations.",
        epilog=f"Store commands read the store URL from --store or ${STORE_ENV}.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="log details, and show tracebacks of failures"
    )
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help=(
            "import MODULE first, e.g. the one that calls register_store() for your own "
            f"store scheme; repeatable (also ${IMPORT_ENV}, comma-separated)"
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    store = argparse.ArgumentParser(add_help=False)
    store.add_argument(
        "--store",
        metavar="URL",
        help=f"sqlite:///..., postgresql://..., redis://... (default: ${STORE_ENV})",
    )

    status = commands.add_parser(
        "status",
        parents=[store],
        help="count records by state",
        description="Count the store's records by state.",
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    status.add_argument(
        "--failed",
        metavar="N",
        type=_positive_int,
        nargs="?",
        const=20,
        help="also list the N most recent failed records (default 20)",
    )
    status.add_argument(
        "--check",
        action="store_true",
        help=(
            "exit 3 when the oldest unreported confirmation is older than --max-age "
            "(for monitors and health checks)"
        ),
    )
    status.add_argument(
        "--max-age",
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="how long a confirmation may wait before delivery counts as behind (default 300)",
    )

    drain = commands.add_parser(
        "drain",
        parents=[store],
        help="deliver every unreported confirmation now",
        description=(
            "Report every confirmed, unreported record to Twilio now, with the reporter an "
            "app runs (retries, backoff, Retry-After). Reads the Twilio credentials like "
            "the app does (TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN, or an API key). "
            "Records another process is reporting right now (under its lease) are left to it."
        ),
    )
    _drain_options(drain)

    worker = commands.add_parser(
        "worker",
        parents=[store],
        help="deliver reports without rest (a long-running delivery process)",
        description=(
            "Deliver every unreported confirmation of a shared store as it comes, until "
            "SIGTERM or SIGINT: the delivery process of apps running with "
            "TWILIO_FEEDBACK_REPORTER=off. Any number of workers on any number of hosts "
            "share the store without posting a report twice. On SIGTERM or SIGINT the "
            "posts in flight finish (within --grace) and the rest stays confirmed for the "
            "other workers; a second signal stops at once. Reads the Twilio credentials "
            "like drain does. Exit codes: 0 stopped on a signal, 1 the store could not be "
            "reached at start or a second signal cut the grace short, 2 a usage or "
            "configuration error."
        ),
    )
    worker.add_argument(
        "--concurrency",
        type=_positive_int,
        default=None,
        metavar="N",
        help="posts in flight at once (default: TWILIO_FEEDBACK_REPORTER_CONCURRENCY, 4)",
    )
    worker.add_argument(
        "--poll-interval",
        type=_positive_float,
        default=1.0,
        metavar="SECONDS",
        help="how often an idle worker looks for new confirmations (default 1)",
    )
    worker.add_argument(
        "--log-interval",
        type=_positive_float,
        default=60.0,
        metavar="SECONDS",
        help="how often to log a line with the counts (default 60)",
    )
    worker.add_argument(
        "--grace",
        type=_non_negative_float,
        default=20.0,
        metavar="SECONDS",
        help="time the posts in flight get to finish on SIGTERM/SIGINT (default 20)",
    )

    retry = commands.add_parser(
        "retry-failed",
        parents=[store],
        help="re-queue failed records as confirmed",
        description=(
            "Turn every failed record back into a confirmed one, for the outbox sweep of a "
            "running app (or --drain, now) to report again."
        ),
    )
    retry.add_argument("--drain", action="store_true", help="then deliver them now, as drain does")
    _drain_options(retry)

    commands.add_parser(
        "purge",
        parents=[store],
        help="delete expired records",
        description="Delete the records whose expiry has passed (apps do it every few minutes).",
    )
    _report_options(
        commands.add_parser(
            "report",
            parents=[store],
            help="conversion insights: a table, JSON, CSV or an HTML page",
            description=(
                "Show what share of the messages sent led to the action, and how fast, "
                "grouped by day, country and sender, from the counts the store keeps "
                "(purging records changes none of them). Days are UTC. Countries whose "
                "conversion over the last 7 days fell below their previous 30 days by more "
                "than --margin are flagged."
            ),
        )
    )
    # The demo's options belong to twilio_feedback.demo, imported only when it runs.
    commands.add_parser(
        "demo",
        add_help=False,
        help="run the whole loop against the built-in Twilio emulator (see demo --help)",
    )
    commands.add_parser(
        "emulator",
        add_help=False,
        help="run the Twilio emulator for local development (see emulator --help)",
    )
    return parser


def command_names() -> list[str]:
    """The commands, in the order ``--help`` lists them: what ``flask twilio-feedback``
    and ``manage.py twilio_feedback`` name in their one-line help."""
    [commands] = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return list(commands.choices)


def _drain_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=60.0,
        metavar="SECONDS",
        help="stop after this long (default 60); what is left stays confirmed",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _report_options(parser: argparse.ArgumentParser) -> None:
    from .report import DEFAULT_MARGIN, DEFAULT_MIN_SENT, TOP_COUNTRIES

    parser.add_argument(
        "--since",
        type=_since,
        default=30,
        metavar="Nd|YYYY-MM-DD",
        help="the first day: 30d is the 30 days that end on --until (default 30d)",
    )
    parser.add_argument(
        "--until",
        type=_until,
        default=None,
        metavar="YYYY-MM-DD|Nd",
        help="the last day, included: a date, or 1d for yesterday (default today, UTC)",
    )
    parser.add_argument(
        "--by",
        type=_groups,
        default=("day", "country"),
        metavar="day,country,sender",
        help="group by any of day, country, sender, in the order given (default day,country)",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON instead of a table")
    output.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    parser.add_argument(
        "--html",
        metavar="FILE",
        help="also write the report as one self-contained HTML page with charts",
    )
    parser.add_argument(
        "--margin",
        type=_points,
        default=DEFAULT_MARGIN,
        metavar="POINTS",
        help=(
            "flag a country whose conversion over the last 7 days is lower than over the "
            f"previous 30 by more than POINTS percentage points (default {DEFAULT_MARGIN * 100:g})"
        ),
    )
    parser.add_argument(
        "--min-sent",
        type=_positive_int,
        default=DEFAULT_MIN_SENT,
        metavar="N",
        help=f"judge only countries with N messages in each period (default {DEFAULT_MIN_SENT})",
    )
    parser.add_argument(
        "--top",
        type=_positive_int,
        default=TOP_COUNTRIES,
        metavar="N",
        help=(
            "countries the HTML chart draws: the N with the most messages "
            f"(default {TOP_COUNTRIES})"
        ),
    )


def _iso_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{safe_excerpt(text)} is neither a date (YYYY-MM-DD) nor a number of days (30d)"
        ) from None


def _days(text: str) -> int | None:
    if text[-1:].lower() == "d" and text[:-1].isdigit():
        return int(text[:-1])
    return None


def _since(text: str) -> int | date:
    days = _days(text)
    if days is None:
        return _iso_day(text)
    if days < 1:
        raise argparse.ArgumentTypeError("must be at least 1d")
    return days


def _until(text: str) -> int | date:
    days = _days(text)
    return _iso_day(text) if days is None else days


def _groups(text: str) -> tuple[Group, ...]:
    from .insights import GROUPS

    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    for name in names:
        if name not in GROUPS:
            raise argparse.ArgumentTypeError(
                f"cannot group by {safe_excerpt(name)}: use any of {','.join(GROUPS)}"
            )
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError("each of day, country, sender at most once")
    return tuple(names)  # type: ignore[arg-type]


def _points(text: str) -> float:
    try:
        value = float(text.removesuffix("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < 100:
        raise argparse.ArgumentTypeError("must be at least 0 and below 100 (percentage points)")
    return value / 100


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


# -- entry point -----------------------------------------------------------------------


def main(
    argv: Sequence[str] | None = None, *, settings: Settings | None = None, prog: str = PROG
) -> int:
    """Entry point of the ``twilio-feedback`` console script; returns the exit code.

    ``settings`` are an app's own (a framework integration's command passes them): the
    store and the Twilio credentials come from there, unless ``--store`` names another
    store. ``prog`` is the command's name in help and messages.
    """
    parser = _parser(prog)
    args, extra = parser.parse_known_args(argv)
    if args.command == "demo":
        return _demo(extra)
    if args.command == "emulator":
        return _emulator(extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    url = ""
    try:
        _import_modules(args.imports)
        source = _source(args.store, settings)
        url = source.url
        with _logging(args.debug, url):
            if args.command == "status":
                return _status(args, source)
            if args.command == "drain":
                return _drain(args, source)
            if args.command == "worker":
                return _worker(args, source)
            if args.command == "retry-failed":
                return _retry_failed(args, source)
            if args.command == "report":
                return _report(args, source)
            return _purge(source)
    except StoreFailure as exc:
        return _fail(args, url, str(exc), 1)
    except StorageError as exc:
        return _fail(args, url, f"{exc} (store {redact_url(url)})", 1)
    except (UsageError, TwilioFeedbackError) as exc:  # configuration errors included
        return _fail(args, url, str(exc), 2)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _fail(args: argparse.Namespace, url: str, message: str, code: int) -> int:
    # The store URL (and so its password) may be in a driver's message or traceback.
    if args.debug:
        sys.stderr.write(redact_text(traceback.format_exc(), url))
    print(f"{PROG}: {redact_text(message, url)}", file=sys.stderr)
    return code


class _RedactingFormatter(logging.Formatter):
    def __init__(self, url: str) -> None:
        super().__init__(f"{PROG}: %(message)s")
        self.url = url

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record), self.url)


@contextlib.contextmanager
def _logging(debug: bool, url: str) -> Iterator[None]:
    """The library's warnings (a report that failed for good, ...) as lines on stderr."""
    logger = logging.getLogger("twilio_feedback")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter(url))
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _demo(argv: list[str]) -> int:
    try:
        from . import demo
    except ImportError as exc:
        print(f"{PROG}: the demo is not available: {exc}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(
        prog=f"{PROG} demo",
        description=demo.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return demo.run(args)
    except TwilioFeedbackError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _emulator(argv: list[str]) -> int:
    from .testing import emulator

    parser = argparse.ArgumentParser(prog=f"{PROG} emulator", description=emulator.__doc__)
    emulator.add_arguments(parser)
    return emulator.run(parser.parse_args(argv))


# -- opening the store -------------------------------------------------------------------


def _import_modules(given: Sequence[str]) -> None:
    """Import the modules named by ``$TWILIO_FEEDBACK_IMPORT`` and ``--import``: those that
    register store schemes (``register_store``) in code rather than by an entry point."""
    names = [name.strip() for name in os.environ.get(IMPORT_ENV, "").split(",")]
    names = [name for name in (*names, *given) if name]
    if names and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` would: the project's own modules
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise UsageError(f"cannot import {name} (--import, ${IMPORT_ENV}): {exc}") from exc
        except Exception as exc:
            raise UsageError(f"importing {name} failed: {type(exc).__name__}: {exc}") from exc


def _source(given: str | None, settings: Settings | None) -> _Source:
    if settings is not None and not given:
        if not isinstance(settings.store, str):
            return _Source("", settings, settings.store)
        given = settings.store
    return _Source(_store_url(given), settings)


def _store_url(given: str | None) -> str:
    url = given or os.environ.get(STORE_ENV, "")
    if not url:
        raise UsageError(f"no store given: pass --store URL or set {STORE_ENV}")
    if "://" not in url:
        raise UsageError(
            f"the store {safe_excerpt(url)} is not a URL: pass sqlite:///..., "
            "postgresql://... or redis://..."
        )
    if urlsplit(url).scheme.lower() == "memory":
        raise UsageError(
            "memory:// lives inside each app process, out of this command's reach: "
            "point --store at the app's sqlite://, postgresql:// or redis:// store"
        )
    from .stores.base import is_known_scheme

    if not is_known_scheme(url):
        raise UsageError(
            f"unknown store scheme {urlsplit(url).scheme.lower()}://: pass sqlite:///..., "
            "postgresql://... or redis://..., or, for a scheme of your own registered with "
            f"register_store(), import the module that registers it: --import MODULE or "
            f"${IMPORT_ENV}"
        )
    return url


def _describe(url: str, exc: BaseException) -> str:
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    reason = f"{type(exc).__name__}: {detail[0]}" if detail else type(exc).__name__
    return f"the store at {redact_url(url)} failed: {reason}"


@contextlib.contextmanager
def _failures(url: str) -> Iterator[None]:
    """Turn a driver's exception (server down, bad credentials, ...) into one line."""
    try:
        yield
    except (UsageError, StoreFailure, TwilioFeedbackError):
        raise
    except Exception as exc:
        raise StoreFailure(_describe(url, exc)) from exc


@contextlib.contextmanager
def _opened(source: _Source) -> Iterator[Store]:
    from .stores.base import store_from_url

    with _failures(source.url):
        if source.store is not None:
            yield source.store
            return
        store = store_from_url(source.url)
        try:
            yield store
        finally:
            with contextlib.suppress(Exception):
                store.close()


def _admin(store: Store, source: _Source, what: str) -> AdminStore:
    from .stores.base import AdminStore

    if not isinstance(store, AdminStore):
        raise UsageError(
            f"the store at {source.shown} ({type(store).__name__}) cannot {what}: it does "
            "not implement list_records() and requeue_failed() (AdminStore)"
        )
    return store


def _settings(source: _Source) -> Settings:
    from .settings import Settings

    store: str | Store = source.store if source.store is not None else source.url
    if source.settings is not None:
        return source.settings.replace(store=store)
    overrides: dict[str, Any] = {"store": store}
    if not os.environ.get(SECRET_ENV):
        # Delivering reports signs nothing: a throwaway key satisfies the settings' check.
        overrides["secret_key"] = secrets.token_urlsafe(32)
    return Settings.from_env(**overrides)


def _keep_seconds(source: _Source) -> float:
    """How long a re-queued record must live, as the app's settings say."""
    from .settings import Settings, keep_seconds

    try:
        return _settings(source).keep_seconds
    except ConfigurationError:  # no credentials here: the defaults, as an app has them
        fields: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(Settings)}
        return keep_seconds(fields["retry_window"], fields["lease_seconds"], fields["clock_skew"])


# -- status ------------------------------------------------------------------------------


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _status(args: argparse.Namespace, source: _Source) -> int:
    from .health import MAX_AGE, check, supports_health

    failed: list[Record] | None = None
    with _opened(source) as store:
        if args.check and not supports_health(store):
            raise UsageError(
                f"the store at {source.shown} ({type(store).__name__}) cannot tell the age "
                "of its oldest unreported confirmation: it does not implement "
                "oldest_unreported() (HealthStore)"
            )
        counts = store.counts()
        health = check(store, max_age=args.max_age or MAX_AGE)
        if args.failed:
            failed = _admin(store, source, "list failed records").list_records(
                State.FAILED, limit=args.failed
            )
    code = BEHIND if args.check and health.state == "behind" else 0
    if args.json:
        data: dict[str, Any] = {"store": source.shown, "counts": counts}
        data["health"] = health.to_dict()
        if failed is not None:
            data["failed"] = [record.to_dict() for record in failed]
        print(json.dumps(data, indent=2))
        return code
    notes = {
        "pending": "sent, not confirmed yet",
        "confirmed": "confirmed, not reported yet",
        "reported": "Twilio accepted the feedback",
        "failed": "Twilio refused it for good",
    }
    print(f"store      {source.shown}")
    for state, count in counts.items():
        print(f"{state:<10} {count:>8}  {notes.get(state, '')}".rstrip())
    age = health.oldest_unreported_age
    if health.state == "unknown":
        said = "the store cannot tell the age of its oldest unreported confirmation"
    elif age is None:
        said = "nothing waits to be reported"
    else:
        said = f"oldest unreported confirmation {age:.0f}s old (behind past {health.max_age:g}s)"
    print(f"{'health':<10} {health.state:>8}  {said}")
    if failed is not None:
        print()
        if not failed:
            print("no failed records")
        for record in failed:
            print(
                f"{record.tracking_id}  {record.message_sid or '-'}  "
                f"confirmed {_when(record.confirmed_at)}  error {record.error_code or '-'}: "
                f"{record.error_message or ''}".rstrip()
            )
    return code


# -- drain -------------------------------------------------------------------------------


class Progress:
    """A one-line progress bar: redrawn in place on a terminal, a line a second otherwise."""

    width = 30

    def __init__(self, out: TextIO, *, enabled: bool = True) -> None:
        self.out = out
        self.enabled = enabled
        self.tty = out.isatty()
        self.shown_at = float("-inf")
        self.last = ""

    def update(self, done: int, total: int, failed: int, *, final: bool = False) -> None:
        """Show ``done`` of ``total`` reports (``failed`` of them refused by Twilio)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self.shown_at < (0.1 if self.tty else 1.0):
            return
        self.shown_at = now
        filled = self.width if total == 0 else self.width * min(done, total) // total
        line = f"drain [{'#' * filled}{'-' * (self.width - filled)}] {done}/{total}"
        if failed:
            line += f" ({failed} failed)"
        if self.tty:
            self.out.write("\r" + line.ljust(len(self.last)) + ("\n" if final else ""))
        elif line != self.last or final:
            self.out.write(line + "\n")
        self.last = line
        self.out.flush()


def _drain(args: argparse.Namespace, source: _Source) -> int:
    from .tracker import FeedbackTracker, _in_memory

    settings = _settings(source)
    if not _in_memory(settings.store):
        # No background reporter of the tracker's own: the drain's reporter does it all,
        # and its counts are the drain's.
        settings = settings.replace(reporter="off")
    progress = Progress(sys.stderr, enabled=not args.quiet)
    with _failures(source.url):
        tracker = FeedbackTracker(settings)
        try:
            drained = tracker.drain(args.timeout, progress.update)
        finally:
            tracker.close(timeout=1.0)
        reported, failed, left = drained.reported, drained.failed, drained.left
        total = max(drained.taken, reported + failed + left)
        progress.update(reported + failed, total, failed, final=True)
        with _opened(source) as store:
            remaining = store.counts().get(State.CONFIRMED.value, 0)
    print(f"{reported} reported, {failed} failed, {left} left undelivered")
    if failed:
        print(f"see them with: {PROG} status --failed")
    if remaining > left:
        print(
            f"{remaining - left} other confirmed record(s) are not due yet: another process "
            "is reporting them, a retry is scheduled, or the message SID is not known yet"
        )
    return 1 if left else 0


# -- worker ------------------------------------------------------------------------------


def _worker(args: argparse.Namespace, source: _Source) -> int:
    from .tracker import FeedbackTracker
    from .worker import Worker

    settings = _settings(source).replace(reporter="off")
    with _failures(source.url):
        tracker = FeedbackTracker(settings)
        try:
            tracker.store.get("twilio-feedback-worker-start")  # reachable? (exit 1 if not)
            worker = Worker(
                tracker,
                concurrency=args.concurrency,
                poll_interval=args.poll_interval,
                log_interval=args.log_interval,
                grace=args.grace,
            )
            signals: list[int] = []

            def stop(signum: int, frame: object) -> None:
                signals.append(signum)
                # A second signal: the posts in flight are not waited for.
                worker.stop(grace=0.0 if len(signals) > 1 else None)

            with _worker_logging(args.debug), _handling(stop):
                result = worker.run()
        finally:
            tracker.close(timeout=1.0)
    print(
        f"worker stopped: {result.reported} reported, {result.failed} failed, "
        f"{result.retried} retried; {result.left} left unfinished"
    )
    return 1 if len(signals) > 1 and result.left else 0


@contextlib.contextmanager
def _handling(handler: Any) -> Iterator[None]:
    """``handler`` for SIGTERM and SIGINT, where signals can be handled (the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def _worker_logging(debug: bool) -> Iterator[None]:
    """The worker's own lines (a start, counts every --log-interval, a stop) at INFO."""
    logger = logging.getLogger("twilio_feedback.worker")
    level = logger.level
    if not debug:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.setLevel(level)


# -- report ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _StoreInsights:
    """A store's insights, read as ``tracker.insights()`` reads them."""

    store: Store

    def insights(
        self,
        since: date | None = None,
        until: date | None = None,
        by: Sequence[Group] = ("day", "country"),
    ) -> Insights:
        from .insights import read

        until = until or datetime.now(timezone.utc).date()
        return read(self.store, since or until, until, by)


def _report(args: argparse.Namespace, source: _Source) -> int:
    from . import report

    now = datetime.now(timezone.utc)
    until = args.until
    if until is None:
        until = now.date()
    elif isinstance(until, int):
        until = now.date() - timedelta(days=until)
    since = args.since
    if isinstance(since, int):
        since = until - timedelta(days=since - 1)
    if since > until:
        raise UsageError(f"--since {since} is after --until {until}")
    with _opened(source) as store:
        built = report.collect(
            _StoreInsights(store),
            since=since,
            until=until,
            by=args.by,
            margin=args.margin,
            min_sent=args.min_sent,
            generated_at=now,
        )
    if args.html:
        try:
            with open(args.html, "w", encoding="utf-8") as out:
                out.write(report.to_html(built, top=args.top))
        except OSError as exc:
            raise UsageError(f"cannot write {args.html}: {exc.strerror or exc}") from exc
        print(f"wrote {args.html}", file=sys.stderr)
    if args.json:
        sys.stdout.write(report.to_json(built))
    elif args.csv:
        sys.stdout.write(report.to_csv(built))
    else:
        sys.stdout.write(report.to_text(built))
    return 0


# -- retry-failed and purge ------------------------------------------------------------------


def _retry_failed(args: argparse.Namespace, source: _Source) -> int:
    keep = _keep_seconds(source)
    with _opened(source) as store:
        admin = _admin(store, source, "re-queue failed records")
        now = time.time()
        count = admin.requeue_failed(now=now, keep_until=now + keep)
    print(f"re-queued {count} failed record(s) as confirmed")
    if args.drain:
        return _drain(args, source)
    if count:
        print(f"a running app's outbox sweep reports them, or now: {PROG} drain")
    return 0


def _purge(source: _Source) -> int:
    with _opened(source) as store:
        count = store.purge(now=time.time())
    print(f"purged {count} expired record(s)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
