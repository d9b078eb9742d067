"""Soak: a uvicorn app behind FeedbackMiddleware on a real store (Redis with AOF, then
PostgreSQL) takes a steady stream of mixed traffic while Twilio misbehaves and the store
server is restarted; then nothing must be lost, nothing answered 5xx, and the server's
memory must stay flat.

Four processes: the store server, FakeTwilio (``bench.fake_server``), the app under
uvicorn (``bench.soak_app``) and the load generator (``bench.soak_load``); this one
orchestrates. The tokens are real links in messages sent through FakeTwilio by a tracker
on the same store, so every report can be counted at the emulator per message SID.

Pass criteria, each checked and printed:

- no 5xx answer (the app never answers one, so each would be the middleware's), and no
  request left without an answer;
- every genuine first click whose request got a 2xx answer is reported at FakeTwilio by
  the end of the drain (duplicates are counted separately: the goal is exactly once);
- no token answered ``confirmed`` twice, and no report for a message nobody clicked
  (previews, HEAD and forgeries only);
- the server's RSS grows less than 10% from the end of the warm-up to the end of the run.

``soak()`` runs one store and returns a :class:`SoakResult`; ``tests/test_soak.py`` runs a
short one in CI.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from .common import Figure, Section, percentile

ROOT = Path(__file__).resolve().parents[1]
RATE = 110.0
STORE_OUTAGE = 3.0
TWILIO_LATENCY = 0.05
RSS_LIMIT = 0.10
REPEAT_AFTER = 2.0  # a person clicks again at least this many seconds after the first time
ERROR_GRACE = 0.25  # an `error` answered this long after the store was started is its outage's

# Share of each kind of request, in percent.
MIX = {"first": 30, "repeat": 10, "forgery": 10, "preview": 10, "head": 5, "other": 35}
HUMANS = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0 Mobile Safari/537.36",
]
BOTS = [
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "WhatsApp/2.23.20.0 A",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_1) AppleWebKit/601.2.4 (KHTML, like "
    "Gecko) Version/9.0.1 Safari/601.2.4 facebookexternalhit/1.1 Facebot Twitterbot/1.0",
    "TelegramBot (like TwitterBot)",
    "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
]
AGENTS = HUMANS + BOTS
# What each kind should be answered (the result status in the JSON body; HEAD has none).
# While the store is down a genuine click is ``deferred``; a repeat may win if its first
# click is still deferred.
EXPECTED = {
    "first": {"confirmed", "deferred"},
    "repeat": {"duplicate", "deferred", "confirmed"},
    "forgery": {"invalid"},
    "preview": {"ignored"},
    "head": {None},
    "other": {None},
}
LOG_MARKS = {
    "deferred in memory, applied once": "deferral warnings (store down)",
    "the store answers again: applying": "replays",
    "answered 'error'": "confirmations answered error (buffer full or closed)",
    "could not be applied before close": "deferred confirmations lost at close",
    "store unavailable while confirming": "confirms answered error (store down)",
    "could not record the outcome": "outcomes not recorded (store down)",
    "outbox sweep failed": "sweeps failed",
    "outbox sweep took": "sweeps that took records",
    "; retry ": "retries scheduled",
    "failed for good": "reports failed for good",
    "Exception in ASGI application": "exceptions through uvicorn",
    "confirming a request failed": "middleware errors",
}


@dataclass
class Planned:
    """One request of the plan, before the tokens exist."""

    kind: str
    method: str
    agent: int
    token: int | None = None  # index into the issued tokens
    variant: str = ""


@dataclass
class Phase:
    """A fault: ``begin`` at ``start`` seconds into the traffic, ``end`` ``length``
    seconds after it actually began."""

    start: float
    length: float
    label: str
    begin: Callable[[], object]
    end: Callable[[], object]


@dataclass
class Check:
    """One pass criterion, its verdict and the figures behind it."""

    name: str
    passed: bool
    detail: str


@dataclass
class SoakResult:
    """Everything one soak run measured."""

    store: str
    duration: float
    warmup: float
    rate: float
    phases: list[tuple[float, float, str]] = field(default_factory=list)
    sent: int = 0
    skipped: int = 0  # not sent: the load generator had fallen behind (a starved machine)
    achieved_rate: float = 0.0
    max_lateness: float = 0.0
    by_kind: dict[str, Counter[str]] = field(default_factory=dict)
    unexpected: Counter[str] = field(default_factory=Counter)
    server_errors: int = 0
    unanswered: Counter[str] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    first_ok: dict[str, str] = field(default_factory=dict)  # SID -> result status
    first_ok_during_outage: int = 0
    # When `error` or `deferred` was answered while the store was up (before it stopped or
    # after it was started again): a store failure that the outage does not explain.
    failures_store_up: list[float] = field(default_factory=list)
    confirmed_twice: int = 0  # tokens answered `confirmed` more than once
    reported: Counter[str] = field(default_factory=Counter)
    missing: dict[str, str] = field(default_factory=dict)  # SID -> first click's status
    rescued: int = 0
    false_reports: int = 0
    reposts_due: int = 0  # reported, yet still ``confirmed`` in the store: posted again later
    left_confirmed: int = 0  # ``confirmed`` in the store and never reported
    unclicked: int = 0
    drain_seconds: float | None = None
    last_report: float | None = None  # seconds after the traffic, of the last expected one
    drain_deadline: float = 0.0
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds, kB)
    twilio_answers: dict[str, int] = field(default_factory=dict)
    server_stats: dict[str, int] = field(default_factory=dict)
    thread_cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by thread name
    lags: list[tuple[float, float]] = field(default_factory=list)  # event loop > 100 ms late
    log_counts: Counter[str] = field(default_factory=Counter)
    setup_seconds: float = 0.0
    traffic_end: float = 0.0

    @property
    def duplicates(self) -> int:
        """Message SIDs reported more than once."""
        return sum(1 for count in self.reported.values() if count > 1)

    @property
    def extra_posts(self) -> int:
        """Accepted feedback posts beyond the first, over every SID."""
        return sum(count - 1 for count in self.reported.values() if count > 1)

    def rss_figures(self) -> tuple[int, int, int, float]:
        """RSS (kB) at the end of the warm-up, at the end, the peak after warm-up, and the
        growth (end / start - 1)."""
        after = [(t, kb) for t, kb in self.rss if t >= self.warmup]
        if not after:
            return 0, 0, 0, 0.0
        base, end = after[0][1], after[-1][1]
        return base, end, max(kb for _, kb in after), end / base - 1

    def load_check(self) -> Check:
        """Whether the load went out as planned (not a criterion of the library: a run on a
        starved machine says so instead of passing or failing for the wrong reason)."""
        return Check(
            "load sent as planned",
            self.skipped == 0 and self.max_lateness < 0.5,
            f"{self.sent} sent at {self.achieved_rate:.1f}/s, {self.skipped} skipped, latest "
            f"start {self.max_lateness * 1000:.0f} ms late",
        )

    def duplicates_text(self) -> str:
        """Duplicate reports seen, and those still due (the goal is exactly once)."""
        return (
            f"{self.duplicates} SIDs reported more than once ({self.extra_posts} extra "
            f"posts) by the end of the drain; {self.reposts_due} more reported but still "
            "confirmed in the store (posted again when their lease ends)"
        )

    def rss_trace(self, points: int = 12) -> str:
        """RSS over the run, in MiB, at about ``points`` moments."""
        step = max(1, len(self.rss) // points)
        picked = self.rss[::step] + ([self.rss[-1]] if (len(self.rss) - 1) % step else [])
        return ", ".join(f"{max(t, 0.0):.0f} s {kb / 1024:.1f}" for t, kb in picked)

    def failures_up_text(self) -> str:
        """`error` and `deferred` answers while the store was up, and when."""
        if not self.failures_store_up:
            return "none"
        ends = [b for a, b, label in self.phases if label.startswith("store")]
        after = f" after it was started again at {ends[0]:.1f} s" if ends else ""
        when = ", ".join(f"{t:.1f} s" for t in sorted(self.failures_store_up)[:10])
        return f"{len(self.failures_store_up)}{after}: at {when}"

    def lag_text(self) -> str:
        """When the server's event loop stalled (a 50 ms timer over 100 ms late)."""
        if not self.lags:
            return "never over 100 ms late"
        worst_at, worst = max(self.lags, key=lambda lag: lag[1])
        seconds = sorted({int(t) for t, _ in self.lags})
        spans: list[list[int]] = []
        for second in seconds:
            if spans and second <= spans[-1][1] + 1:
                spans[-1][1] = second
            else:
                spans.append([second, second])
        where = ", ".join(f"{a}-{b + 1} s" if b > a else f"{a} s" for a, b in spans)
        return (
            f"{len(self.lags)} ticks over 100 ms late, worst {worst:.2f} s at {worst_at:.0f} s; "
            f"stalls in {where}"
        )

    def checks(self) -> list[Check]:
        """The pass criteria, each with its verdict."""
        status = ", ".join(f"{n} {s}" for s, n in Counter(self.missing.values()).most_common())
        base, end, peak, growth = self.rss_figures()
        first = len(self.first_ok)
        return [
            Check(
                "no 5xx from the middleware, every request answered",
                self.server_errors == 0 and not self.unanswered,
                f"{self.server_errors} 5xx, {sum(self.unanswered.values())} unanswered "
                f"({dict(self.unanswered) or 'none'}) of {self.sent} requests",
            ),
            Check(
                "every first click answered 2xx is reported",
                not self.missing,
                f"{first - len(self.missing)} of {first} reported"
                + (f"; {len(self.missing)} never reported (first click said: {status})")
                * bool(self.missing),
            ),
            Check(
                "no token answered `confirmed` twice",
                self.confirmed_twice == 0,
                f"{self.confirmed_twice} tokens",
            ),
            Check(
                "no report for a message nobody clicked",
                self.false_reports == 0,
                f"{self.false_reports} of {self.unclicked} unclicked messages reported",
            ),
            Check(
                f"server RSS after warm-up grows < {RSS_LIMIT:.0%}",
                bool(self.rss) and growth < RSS_LIMIT,
                f"{base / 1024:.1f} -> {end / 1024:.1f} MiB ({growth:+.1%}), "
                f"peak {peak / 1024:.1f} MiB",
            ),
        ]

    def summary(self) -> str:
        """A few lines for a person (and for a failing test's message)."""
        load = self.load_check()
        lines = [
            f"soak on {self.store}, {self.duration:.0f} s at {self.rate:.0f}/s: set-up "
            f"{self.setup_seconds:.1f} s; drain {_drain_text(self)}, last expected report "
            f"{'none' if self.last_report is None else f'{self.last_report:.1f} s'} after the "
            "traffic",
            f"  [{'OK' if load.passed else 'BAD'}] {load.name}: {load.detail}",
        ]
        for check in self.checks():
            lines.append(f"  [{'PASS' if check.passed else 'FAIL'}] {check.name}: {check.detail}")
        lines.append(f"  duplicates: {self.duplicates_text()}")
        lines.append(f"  RSS (MiB): {self.rss_trace()}")
        lines.append(
            "  faults: " + "; ".join(f"{a:.1f}-{b:.1f} s {label}" for a, b, label in self.phases)
        )
        lines.append(f"  answers by kind: {_kinds_text(self)}")
        if self.unexpected:
            lines.append(f"  unexpected answers: {dict(self.unexpected)}")
        lines.append(
            f"  `error` or `deferred` answered while the store was up: {self.failures_up_text()}"
        )
        lines.append(
            f"  store after the drain: {self.reposts_due} reported yet still confirmed, "
            f"{self.left_confirmed} confirmed and unreported"
        )
        lines.append(f"  server log: {dict(self.log_counts) or 'quiet'}")
        lines.append(f"  server stats: {self.server_stats}")
        lines.append(f"  server event loop: {self.lag_text()}")
        lines.append(f"  server CPU seconds by thread: {self.thread_cpu}")
        lines.append(f"  Twilio feedback answers: {self.twilio_answers}")
        return "\n".join(lines)


def _drain_text(result: SoakResult) -> str:
    if result.drain_seconds is None:
        return f"gave up after {result.drain_deadline:.0f} s"
    return f"{result.drain_seconds:.1f} s"


def _kinds_text(result: SoakResult) -> str:
    return "; ".join(
        f"{kind} " + ", ".join(f"{answer} {n}" for answer, n in counts.most_common())
        for kind, counts in result.by_kind.items()
    )


# -- the plan ----------------------------------------------------------------------------


def plan(count: int, rate: float, seed: int) -> tuple[list[Planned], int, int]:
    """``count`` requests; return them with the number of tokens to be clicked and of
    tokens that are only previewed, probed or forged (never clicked by a person)."""
    rng = random.Random(seed)
    kinds, weights = zip(*MIX.items(), strict=True)
    out: list[Planned] = []
    clicked: list[tuple[int, int]] = []  # (request number, token) of first clicks
    settled = 0  # first clicks at least REPEAT_AFTER seconds old
    next_click = 0
    bystanders = 0  # tokens nobody clicks, numbered apart, offset once the total is known

    def bystander() -> int:
        nonlocal bystanders
        bystanders += 1
        return -bystanders

    human = range(len(HUMANS))
    for n in range(count):
        while settled < len(clicked) and clicked[settled][0] <= n - REPEAT_AFTER * rate:
            settled += 1
        kind = rng.choices(kinds, weights)[0]
        if kind == "repeat" and not settled:
            kind = "first"
        if kind == "first":
            post = rng.random() < 0.1
            out.append(Planned(kind, "POST" if post else "GET", rng.choice(human), next_click))
            clicked.append((n, next_click))
            next_click += 1
        elif kind == "repeat":
            _, token = rng.choice(clicked[max(0, settled - 50) : settled])
            out.append(Planned(kind, "GET", rng.choice(human), token))
        elif kind in ("preview", "head"):
            # A preview usually comes just before the person's click.
            token = next_click if rng.random() < 0.6 else bystander()
            agent = len(HUMANS) + rng.randrange(len(BOTS)) if kind == "preview" else 0
            out.append(Planned(kind, "HEAD" if kind == "head" else "GET", agent, token))
        elif kind == "forgery":
            variant = rng.choice(
                ["tampered", "tampered", "random", "truncated", "empty", "missing", "huge"]
            )
            out.append(Planned(kind, "GET", rng.choice(human), bystander(), variant))
        else:
            variant = rng.choice(["home", "items", "echo", "missing"])
            out.append(
                Planned(
                    kind, "POST" if variant == "echo" else "GET", rng.choice(human), None, variant
                )
            )
    clicks = next_click + 1  # the last preview may name a token nobody gets to click
    for item in out:
        if item.token is not None and item.token < 0:
            item.token = clicks - item.token - 1
    return out, clicks, bystanders


def _tamper(token: str, rng: random.Random) -> str:
    alphabet = string.ascii_letters + string.digits + "-_"
    at = len(token) // 2
    replacement = rng.choice(alphabet.replace(token[at], ""))
    return token[:at] + replacement + token[at + 1 :]


def render(item: Planned, tokens: list[str], rng: random.Random) -> list[Any]:
    """``[method, path, user agent index, form body or None]`` for the load generator."""
    if item.kind == "other":
        path = {"home": "/", "items": "/api/items", "echo": "/api/echo"}.get(
            item.variant, "/no-such-page"
        )
        return [item.method, path, item.agent, "note=hello&n=1" if item.method == "POST" else None]
    assert item.token is not None
    token = tokens[item.token]
    if item.kind == "forgery":
        token = {
            "tampered": _tamper(token, rng),
            "random": "".join(rng.choices(string.ascii_letters + string.digits, k=len(token))),
            "truncated": token[:-3],
            "empty": "",
            "missing": "",
            "huge": token * 64,
        }[item.variant]
        if item.variant == "missing":
            return ["GET", "/confirm?ref=sms", item.agent, None]
    if item.method == "POST":
        return ["POST", "/confirm", item.agent, f"id={quote(token)}"]
    return [item.method, f"/confirm?id={quote(token)}", item.agent, None]


# -- processes -----------------------------------------------------------------------------


def _free_port() -> int:
    from tests.servers import free_port

    return free_port()


def _store_server(store: str) -> Any:
    from tests.servers import PostgresServer, RedisServer

    if store == "redis":
        return RedisServer(persistent=True)
    if store == "postgresql":
        return PostgresServer()
    raise ValueError(f"store must be redis or postgresql, not {store!r}")


def _rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class _Sampler(threading.Thread):
    """Samples a process's RSS every ``every`` seconds from ``t0``."""

    def __init__(self, pid: int, t0: float, every: float = 1.0) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid, self.t0, self.every = pid, t0, every
        self.samples: list[tuple[float, int]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            kb = _rss_kb(self.pid)
            if kb is not None:
                self.samples.append((time.time() - self.t0, kb))
            self.stopped.wait(self.every)

    def stop(self) -> list[tuple[float, int]]:
        self.stopped.set()
        self.join(5)
        kb = _rss_kb(self.pid)
        if kb is not None:
            self.samples.append((time.time() - self.t0, kb))
        return self.samples


def _wait_http(url: str, process: subprocess.Popen[Any], timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited at start (status {process.returncode})")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _issue(
    count: int, store_url: str, secret: str, twilio: Any, link: str
) -> tuple[list[str], list[str]]:
    """Send ``count`` tracked messages through FakeTwilio with a tracker on the store;
    return their tokens (read back from the message bodies, as a phone would) and SIDs."""
    from twilio_feedback import FeedbackTracker, Settings

    tracker = FeedbackTracker(
        Settings(
            account_sid=twilio.account_sid,
            auth_token=twilio.auth_token,
            api_base_url=twilio.base_url,
            secret_key=secret,
            store=store_url,
        )
    )

    def send(n: int) -> tuple[str, str]:
        message = tracker.send(
            to=f"+1555{n:07d}", from_="+15017122661", body="Sign in: {link}", link=link
        )
        url = str(message.body).split("Sign in: ", 1)[1]
        return parse_qs(urlsplit(url).query)["id"][0], str(message.sid)

    try:
        with ThreadPoolExecutor(8) as pool:
            sent = list(pool.map(send, range(count)))
    finally:
        # Only the app's tracker may report: this one stops before the traffic starts.
        tracker.close(timeout=1.0)
    return [token for token, _ in sent], [sid for _, sid in sent]


def _schedule(duration: float, warmup: float, twilio: Any, server: Any) -> list[Phase]:
    """The faults, one after the other after the warm-up, with a quiet tail."""
    span = duration - warmup
    burst = min(max(0.1 * span, 1.0), 5.0)
    slow = min(max(0.12 * span, 1.5), 6.0)
    delay = 3.0 if span >= 30 else 2.0
    tail = min(max(0.1 * span, 0.5), 5.0)
    gap = max(0.0, (span - 2 * burst - STORE_OUTAGE - slow - tail) / 4)

    def clear() -> object:
        return twilio.command(clear=True)

    def fault(spec: dict[str, Any]) -> Callable[[], object]:
        return lambda: twilio.command(fail_always=spec)

    phases = [
        Phase(0.0, burst, "Twilio answers 503", fault({"status": 503}), clear),
        Phase(
            0.0,
            burst,
            "Twilio answers 429 with Retry-After: 1",
            fault({"status": 429, "retry_after": 1}),
            clear,
        ),
        Phase(0.0, STORE_OUTAGE, "store server stopped", server.halt, server.start),
        Phase(0.0, slow, f"Twilio answers in {delay:.0f} s", fault({"delay": delay}), clear),
    ]
    t = warmup + gap
    for phase in phases:
        phase.start = t
        t += phase.length + gap
    return phases


def _run_phases(
    phases: list[Phase], t0: float, say: Callable[[str], None]
) -> list[tuple[float, float, str]]:
    """Switch each fault on and off on time; return when each actually was."""
    done = []
    for phase in phases:
        _sleep_until(t0 + phase.start)
        began = time.time()
        phase.begin()
        say(f"{began - t0:5.1f} s {phase.label}")
        _sleep_until(began + phase.length)
        phase.end()
        ended = time.time()
        say(f"{ended - t0:5.1f} s end: {phase.label}")
        done.append((began - t0, ended - t0, phase.label))
    return done


def _sleep_until(when: float) -> None:
    # The schedule of the scenario (a fault's moment), not a synchronisation.
    while (left := when - time.time()) > 0:
        time.sleep(min(left, 0.5))


def soak(
    store: str,
    duration: float = 60.0,
    *,
    rate: float = RATE,
    warmup: float | None = None,
    drain: float | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    keep: bool = False,
) -> SoakResult:
    """Run one soak on ``store`` (``"redis"`` or ``"postgresql"``) and return what it
    measured; ``log`` hears of each step. ``keep`` keeps the working directory (plan,
    answers, the server's log) and names it in the log."""
    import secrets

    import httpx

    say = log or (lambda _: None)
    warmup = warmup if warmup is not None else min(max(0.15 * duration, 2.0), 10.0)
    drain = drain if drain is not None else max(12.0, duration)
    result = SoakResult(store, duration, warmup, rate, drain_deadline=drain)
    rng = random.Random(seed)
    planned, clicks, bystanders = plan(round(rate * duration), rate, seed)
    work = Path(tempfile.mkdtemp(prefix="tf-soak-"))
    setup_started = time.monotonic()
    from .fake_server import RemoteTwilio

    server = _store_server(store)
    twilio = RemoteTwilio(cwd=str(ROOT))
    app: subprocess.Popen[bytes] | None = None
    load: subprocess.Popen[str] | None = None
    sampler: _Sampler | None = None
    try:
        store_url = server.url
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        secret = secrets.token_urlsafe(32)
        env = {
            **os.environ,
            "SOAK_STORE_URL": store_url,
            "SOAK_SECRET_KEY": secret,
            "SOAK_TWILIO_URL": twilio.base_url,
            "SOAK_ACCOUNT_SID": twilio.account_sid,
            "SOAK_AUTH_TOKEN": twilio.auth_token,
        }
        with open(work / "server.log", "wb") as server_log:
            app = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "bench.soak_app:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                cwd=ROOT,
                env=env,
                stdout=server_log,
                stderr=subprocess.STDOUT,
            )
        # The app starts meanwhile.
        say(f"{store}: issuing {clicks + bystanders} tracked messages")
        tokens, sids = _issue(clicks + bystanders, store_url, secret, twilio, f"{base}/confirm")
        _wait_http(f"{base}/", app, 30)
        twilio.command(latency=TWILIO_LATENCY)
        requests = [render(item, tokens, rng) for item in planned]
        (work / "plan.json").write_text(
            json.dumps(
                {"base_url": base, "rate": rate, "user_agents": AGENTS, "requests": requests}
            )
        )
        load = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.soak_load",
                str(work / "plan.json"),
                str(work / "out.json"),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert load.stdout is not None
        if load.stdout.readline().strip() != "ready":
            raise RuntimeError("the load generator did not start")
        t0 = float(json.loads(load.stdout.readline())["t0"])
        result.setup_seconds = time.monotonic() - setup_started
        sampler = _Sampler(app.pid, t0)
        sampler.start()
        say(f"{store}: traffic for {duration:.0f} s at {rate:.0f}/s")
        phases = _schedule(duration, warmup, twilio, server)
        result.phases = _run_phases(phases, t0, lambda line: say(f"{store}: {line}"))
        load.wait(duration + 120)
        out = json.loads((work / "out.json").read_text())
        result.traffic_end = float(out["t_end"])
        _tally(result, planned, out, sids)
        say(f"{store}: traffic done; draining (deadline {drain:.0f} s)")
        _drain(result, twilio, drain)
        result.rss = sampler.stop()
        sampler = None
        inside = httpx.get(f"{base}/_stats", timeout=10).json()
        result.server_stats = inside["tracker"]
        result.thread_cpu = {name: round(cpu, 1) for name, cpu in inside["threads"].items()}
        # Stalls while the messages were being issued are the set-up's, not the run's.
        result.lags = [(when - t0, late) for when, late in inside["lags"] if when >= t0]
        _final_feedback(result, twilio, sids, planned)
        _outbox(result, store_url)
    finally:
        if sampler is not None:
            sampler.stop()
        if load is not None and load.poll() is None:
            load.kill()
            load.wait(10)
        if load is not None and load.stdout is not None:
            load.stdout.close()
        if app is not None:
            app.terminate()
            try:
                app.wait(20)
            except subprocess.TimeoutExpired:
                app.kill()
                app.wait(10)
        twilio.close()
        server.stop()
    result.log_counts = _log_counts((work / "server.log").read_text(errors="replace"))
    if keep:
        (work / "result.json").write_text(json.dumps(vars(result), default=str))
        say(f"{store}: plan, answers, result and server log kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return result


def _tally(
    result: SoakResult, planned: list[Planned], out: dict[str, Any], sids: list[str]
) -> None:
    outage = next(((a, b) for a, b, label in result.phases if label.startswith("store")), None)
    rate = result.rate
    results = out["results"]
    result.sent = sum(1 for r in results if r[4] != "skipped")
    span = float(out["t_end"]) - float(out["t0"])
    result.achieved_rate = max(result.sent - 1, 0) / span if span > 0 else 0.0
    confirmed: Counter[int] = Counter()
    for n, (item, (status, answer, seconds, lateness, error)) in enumerate(
        zip(planned, results, strict=True)
    ):
        label = error or (f"{status} {answer}" if answer else str(status))
        result.by_kind.setdefault(item.kind, Counter())[label] += 1
        if error == "skipped":
            result.skipped += 1
            continue
        result.latencies.setdefault(item.kind, []).append(seconds)
        result.max_lateness = max(result.max_lateness, lateness)
        if error is not None:
            result.unanswered[error] += 1
            continue
        if status >= 500:
            result.server_errors += 1
        answered_at = n / rate + lateness + seconds
        if answer in ("error", "deferred") and (
            outage is None or not outage[0] <= answered_at <= outage[1] + ERROR_GRACE
        ):
            result.failures_store_up.append(answered_at)
        if answer == "confirmed" and item.token is not None:
            confirmed[item.token] += 1
        wanted = 404 if item.variant == "missing" and item.kind == "other" else 200
        if answer not in EXPECTED[item.kind] or status != wanted:
            result.unexpected[f"{item.kind}: {label}"] += 1
        if item.kind == "first" and 200 <= status < 300:
            assert item.token is not None
            result.first_ok[sids[item.token]] = str(answer)
            sent_at = n / rate
            if outage is not None and outage[0] <= sent_at < outage[1]:
                result.first_ok_during_outage += 1
    result.confirmed_twice = sum(1 for count in confirmed.values() if count > 1)


def _drain(result: SoakResult, twilio: Any, deadline: float) -> None:
    """Wait until every first click answered 2xx is reported, up to ``deadline`` seconds
    after the traffic."""
    expected = set(result.first_ok)
    traffic_end = result.traffic_end
    end = traffic_end + deadline
    while True:
        reported = twilio.command(feedback=True)["feedback"]
        if expected.issubset(reported):
            result.drain_seconds = max(0.0, time.time() - traffic_end)
            return
        if time.time() >= end:
            return
        time.sleep(0.25)  # polling the emulator in another process, with a deadline


def _final_feedback(
    result: SoakResult, twilio: Any, sids: list[str], planned: list[Planned]
) -> None:
    answer = twilio.command(feedback=True)
    result.reported = Counter(answer["feedback"])
    result.twilio_answers = answer["answers"]
    times = [answer["first"][sid] for sid in result.first_ok if sid in answer["first"]]
    if times:
        result.last_report = max(times) - result.traffic_end
    result.missing = {
        sid: status for sid, status in result.first_ok.items() if sid not in result.reported
    }
    clicked_by_people = {
        sids[item.token]
        for item in planned
        if item.kind in ("first", "repeat") and item.token is not None
    }
    result.rescued = sum(
        1
        for sid, status in result.first_ok.items()
        if status != "confirmed" and sid in result.reported
    )
    unclicked = set(sids) - clicked_by_people
    result.unclicked = len(unclicked)
    result.false_reports = sum(1 for sid in unclicked if sid in result.reported)


def _outbox(result: SoakResult, store_url: str) -> None:
    """Records still ``confirmed`` in the store after the drain: those already reported
    will be posted again once their lease ends (a duplicate the drain cannot wait for)."""
    from twilio_feedback import State
    from twilio_feedback.stores import store_from_url

    store = store_from_url(store_url)
    try:
        left = store.list_records(State.CONFIRMED, limit=1_000_000)  # type: ignore[attr-defined]
    finally:
        store.close()
    result.reposts_due = sum(1 for r in left if r.message_sid in result.reported)
    result.left_confirmed = len(left) - result.reposts_due


def _log_counts(text: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        for mark, label in LOG_MARKS.items():
            if mark in line:
                counts[label] += 1
        if line.startswith("Traceback"):
            counts["tracebacks"] += 1
    return counts


# -- the benchmark section -------------------------------------------------------------------


STORES = {"redis": "Redis (AOF, fsync always)", "postgresql": "PostgreSQL"}


def run(quick: bool = False) -> Section:
    """Soak each store and return the section."""
    duration = 20.0 if quick else 60.0
    section = Section(
        f"Soak ({duration:.0f} s of mixed traffic under uvicorn, Twilio faults, store restart)"
    )
    results = []
    for store in STORES:
        result = soak(store, duration, log=lambda line: print(f"  {line}", file=sys.stderr))
        print(result.summary(), file=sys.stderr)
        results.append(result)
        name = STORES[store]
        firsts = result.latencies.get("first") or [0.0]
        p50, p99 = percentile(firsts, 50), percentile(firsts, 99)
        load = result.load_check()
        section.figures.append(
            Figure(
                f"{name}: requests",
                f"{result.sent:,} at {result.achieved_rate:.1f}/s",
                f"first clicks answered in p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms; "
                f"{result.skipped} skipped, latest start {result.max_lateness * 1000:.0f} ms "
                "late",
                f"{result.rate:.0f}/s, as planned",
                "met" if load.passed else "missed",
            )
        )
        for check in result.checks():
            section.figures.append(
                Figure(
                    f"{name}: {check.name}",
                    "pass" if check.passed else "fail",
                    check.detail,
                    "pass",
                    "met" if check.passed else "missed",
                )
            )
        first = len(result.first_ok)
        section.figures.append(
            Figure(
                f"{name}: first clicks by answer",
                ", ".join(f"{s} {n}" for s, n in Counter(result.first_ok.values()).most_common()),
                f"{first} answered 2xx, {result.first_ok_during_outage} of them sent while "
                f"the store was down; {result.rescued} not confirmed at first but reported "
                f"after a later click; `error` or `deferred` answered while the store was up "
                "(any kind): "
                f"{result.failures_up_text()}",
            )
        )
        last = "none" if result.last_report is None else f"{result.last_report:.1f} s"
        section.figures.append(
            Figure(
                f"{name}: drain after the traffic",
                _drain_text(result),
                f"last expected report {last} after the traffic; {result.duplicates_text()}",
                "exactly once (goal)",
            )
        )
        section.figures.append(
            Figure(f"{name}: server event loop", result.lag_text(), "a 50 ms timer, in the app")
        )
        if result.unexpected:
            section.notes.append(f"{name}: unexpected answers: {dict(result.unexpected)}.")
        section.notes.append(
            f"{name}: RSS (MiB) {result.rss_trace()}; server log "
            f"{dict(result.log_counts) or 'quiet'}; tracker stats at the end "
            f"{result.server_stats}; CPU seconds by thread {result.thread_cpu}; Twilio's "
            f"answers to feedback posts {result.twilio_answers}."
        )
    first = results[0]
    schedule = "; ".join(f"{a:.1f}-{b:.1f} s {label}" for a, b, label in first.phases)
    section.notes += [
        f"Traffic: {first.rate:.0f} requests/s, evenly spaced, open loop (a slow answer does "
        "not slow the offered load), over keep-alive connections; "
        + ", ".join(f"{share}% {kind}" for kind, share in MIX.items())
        + ". First clicks are GETs (10% POST forms) of a token never clicked before; "
        "repeats re-click one of the last 50 clicked at least "
        f"{REPEAT_AFTER:.0f} s before; previews (Slack, WhatsApp, iMessage, Telegram, "
        "Discord user agents) and HEADs mostly hit the token about to be clicked; forgeries "
        "are tampered, random, truncated, empty, missing and 2 KB tokens.",
        f"Faults, seconds into the traffic (warm-up {first.warmup:.0f} s): {schedule}. "
        f"Twilio answers in {TWILIO_LATENCY * 1000:.0f} ms otherwise. The store server is "
        f"stopped (Redis: SIGTERM; PostgreSQL: pg_ctl stop -m fast) and started again on the "
        f"same port and data {STORE_OUTAGE:.0f} s later.",
        "Processes: the store server, FakeTwilio, the app under uvicorn (one worker, default "
        "settings but the store and the Twilio URL) and the load generator, each its own; "
        "the tokens are real links in messages sent through FakeTwilio, so reports are "
        "counted there per message SID. RSS of the uvicorn process is read from "
        "/proc/PID/status every second; growth is from the end of the warm-up to the end "
        "of the drain. The drain waits for the last expected report, up to "
        f"{first.drain_deadline:.0f} s.",
    ]
    return section


def main() -> None:
    """``python -m bench.bench_soak STORE SECONDS``: one soak, printed."""
    store = sys.argv[1] if len(sys.argv) > 1 else "redis"
    duration = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    result = soak(store, duration, log=lambda line: print(line, file=sys.stderr), keep=True)
    print(result.summary())


if __name__ == "__main__":
    main()
