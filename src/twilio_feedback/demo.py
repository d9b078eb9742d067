"""Run the whole loop on this machine, against the built-in Twilio emulator.

Starts FakeTwilio (a real HTTP Twilio emulator, answering slowly on purpose) and a small
web app wrapped in FeedbackMiddleware, both on 127.0.0.1; sends a tracked message through
the official twilio client; lets link-preview bots fetch the link (ignored); opens it as
the person would (confirmed at once: the page does not wait for Twilio); shows the
feedback arriving at the emulator; opens it again (duplicate, nothing more sent).

--interactive prints the link and waits for you to open it in a browser.
--live sends a real SMS through api.twilio.com with the credentials in the environment
(TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN, or TWILIO_API_KEY and TWILIO_API_SECRET);
give --to and --from, and --public-url if the phone cannot reach this machine directly.
"""

from __future__ import annotations

import argparse
import html
import os
import secrets
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, TextIO
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from .errors import ConfigurationError
from .records import ConfirmResult
from .settings import Settings
from .stores.memory import MemoryStore
from .tracker import FeedbackTracker

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from .testing import FakeTwilio

__all__ = ["add_arguments", "main", "run"]

PHONE_BROWSER = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
PREVIEWS = {
    "iMessage link preview": (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_1) AppleWebKit/601.2.4 (KHTML, like "
        "Gecko) Version/9.0.1 Safari/601.2.4 facebookexternalhit/1.1 Facebot Twitterbot/1.0"
    ),
    "WhatsApp link preview": "WhatsApp/2.24.13.78 A",
    "Slack link expander": "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
}
STATUS_HEADER = "X-Feedback-Status"
TEST_TO = "+15558675310"
TEST_FROM = "+15017122661"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options to ``parser``."""
    parser.add_argument(
        "--interactive", action="store_true", help="wait for you to open the link in a browser"
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="send a real SMS through Twilio (credentials from the environment)",
    )
    parser.add_argument("--to", help=f"recipient (default with the emulator: {TEST_TO})")
    parser.add_argument(
        "--from",
        dest="from_",
        help=f"sender number or Messaging Service SID (default with the emulator: {TEST_FROM})",
    )
    parser.add_argument(
        "--twilio-latency",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how long the emulator takes to answer (default 1.0)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address the app listens on")
    parser.add_argument("--port", type=int, default=0, help="port of the app (default: any)")
    parser.add_argument(
        "--public-url",
        metavar="URL",
        help="base URL the link points to, if not http://HOST:PORT (a tunnel, say)",
    )


@dataclass
class _Visits:
    """What the demo app saw, shared with its request threads."""

    results: list[ConfirmResult] = field(default_factory=list)
    confirmed: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """The demo's web app: a page for the confirm link, 404 elsewhere."""
        result: ConfirmResult | None = environ.get("twilio_feedback.result")
        if result is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found"]
        with self.lock:
            self.results.append(result)
        if result.confirmed:
            self.confirmed.set()
        text = {
            "confirmed": "Thanks, you're signed in.",
            "duplicate": "You're already signed in.",
            "deferred": "Thanks, you're signed in.",
            "ignored": "Sign-in link.",
        }.get(result.status, "This link is not valid any more.")
        page = f"<h1>{html.escape(text)}</h1><p>status: {html.escape(result.status)}</p>"
        start_response(
            "200 OK",
            [("Content-Type", "text/html; charset=utf-8"), (STATUS_HEADER, result.status)],
        )
        return [page.encode()]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Keep the demo's output readable."""


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _fetch(url: str, user_agent: str) -> tuple[str, float]:
    """GET ``url`` as ``user_agent`` would (never through a proxy); return the app's status
    header and the milliseconds it took."""
    started = time.perf_counter()
    request = urllib.request.Request(url, headers={"User-Agent": user_agent})
    try:
        with _OPENER.open(request, timeout=10) as response:
            status = response.headers.get(STATUS_HEADER, "?")
            response.read()
    except urllib.error.HTTPError as exc:
        status = f"HTTP {exc.code}"
    return status, (time.perf_counter() - started) * 1000


def _settings(args: argparse.Namespace, fake: FakeTwilio | None) -> Settings:
    if fake is None:
        overrides: dict[str, Any] = {"store": MemoryStore()}
        if not os.environ.get("TWILIO_FEEDBACK_SECRET_KEY"):
            overrides["secret_key"] = secrets.token_urlsafe(32)
        return Settings.from_env(**overrides)
    return Settings(
        account_sid=fake.account_sid,
        auth_token=fake.auth_token,
        secret_key=secrets.token_urlsafe(32),
        store=MemoryStore(),
        api_base_url=fake.base_url,
    )


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the demo; return the exit code (0 when every step did what it should)."""
    stream = out or sys.stdout

    def say(text: str = "") -> None:
        print(text, file=stream, flush=True)

    if args.live and not (args.to and args.from_):
        say("--live needs --to (your phone) and --from (a Twilio number or MG... SID)")
        return 2
    from .wsgi import FeedbackMiddleware

    fake: FakeTwilio | None = None
    if not args.live:
        from .testing import FakeTwilio

        fake = FakeTwilio().start()
    try:
        settings = _settings(args, fake)
    except ConfigurationError as exc:
        say(f"--live reads your Twilio credentials from the environment: {exc}")
        return 2
    visits = _Visits()
    tracker = FeedbackTracker(settings)
    server = make_server(
        args.host,
        args.port,
        FeedbackMiddleware(visits.app, tracker),
        server_class=_Server,
        handler_class=_QuietHandler,
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = (args.public_url or f"http://{args.host}:{server.server_port}").rstrip("/")
    try:
        return _story(args, say, tracker, fake, visits, base)
    except KeyboardInterrupt:
        say("\nstopped")
        return 130
    finally:
        server.shutdown()
        server.server_close()
        tracker.close(timeout=2)
        if fake is not None:
            fake.stop()


def _story(
    args: argparse.Namespace,
    say: Callable[..., None],
    tracker: FeedbackTracker,
    fake: FakeTwilio | None,
    visits: _Visits,
    base: str,
) -> int:
    checks: list[bool] = []
    say("twilio-feedback demo")
    say("=" * 72)
    if fake is not None:
        say(f"Twilio emulator  {fake.base_url}")
    else:
        say(f"Twilio           {tracker.settings.api_base_url} (live: a real SMS is sent)")
    say(f"Your app         {base}  (FeedbackMiddleware on /confirm)")
    say()

    sender = args.from_ or TEST_FROM
    params = {"messaging_service_sid": sender} if sender.startswith("MG") else {"from_": sender}
    started = time.perf_counter()
    message = tracker.send(
        to=args.to or TEST_TO, body="Your sign-in link: {link}", link=f"{base}/confirm", **params
    )
    sent_ms = (time.perf_counter() - started) * 1000
    link = str(message.body).rsplit(" ", 1)[-1]
    provide_feedback = fake.messages[-1].provide_feedback if fake is not None else True
    checks.append(provide_feedback)
    say(f"1. Sent {message.sid} with ProvideFeedback={str(provide_feedback).lower()}")
    say(f"   body: {message.body!r} ({sent_ms:.0f} ms)")

    if fake is not None:
        fake.latency = args.twilio_latency
        say(f"   The emulator now takes {args.twilio_latency:g} s to answer, like a slow Twilio.")
    if args.interactive or args.live:
        say(f"\n2. Open this link{' on your phone' if args.live else ' in a browser'}:\n")
        say(f"       {link}\n")
        if args.live and not args.public_url:
            say("   (your phone must reach that address: see --host and --public-url)")
        say("   Waiting for the confirmation (Ctrl-C to stop)...")
        while not visits.confirmed.wait(0.5):
            pass
        clicked = time.perf_counter()
        for result in visits.results:
            say(f"   a visit: {result.status}" + (f" ({result.reason})" if result.reason else ""))
    else:
        say()
        for step, (name, agent) in enumerate(PREVIEWS.items(), start=2):
            status, ms = _fetch(link, agent)
            say(f"{step}. {name + ' fetched it':<36} -> {status:<10} ({ms:.0f} ms)")
            checks.append(status == "ignored")
        clicked = time.perf_counter()
        status, ms = _fetch(link, PHONE_BROWSER)
        say(f"{step + 1}. {'The person opened it':<36} -> {status:<10} ({ms:.0f} ms)")
        checks.append(status == "confirmed")
        click_ms = ms

    pending = tracker.flush(timeout=max(15.0, 3 * args.twilio_latency + 5))
    reported_ms = (time.perf_counter() - clicked) * 1000
    stats = tracker.stats()
    checks.append(pending == 0 and stats["reported"] == 1)
    say(
        f"\n   Feedback reported in the background, {reported_ms:.0f} ms after the click"
        + ("" if pending == 0 else f" ({pending} still pending)")
    )
    posts = fake.feedback if fake is not None else []
    for post in posts:
        say(
            f"   POST /2010-04-01/Accounts/{post.account_sid}/Messages/{post.message_sid}"
            f"/Feedback.json  Outcome={post.outcome}"
        )
    if fake is not None:
        checks.append([(p.message_sid, p.outcome) for p in posts] == [(message.sid, "confirmed")])

    if not (args.interactive or args.live):
        status, _ = _fetch(link, PHONE_BROWSER)
        tracker.flush(timeout=5)
        say(f"\n   Opened again -> {status} (nothing more sent to Twilio)")
        checks.append(status == "duplicate" and len(fake.feedback if fake else []) == 1)

    ok = all(checks)
    say()
    say("Summary")
    say("-" * 72)
    say(f"  message     {message.sid}  ProvideFeedback={str(provide_feedback).lower()}")
    say(f"  link        {len(link)} characters, with a 32-character signed token")
    say("  visits      " + ", ".join(result.status for result in visits.results))
    if not (args.interactive or args.live):
        say(f"  response    {click_ms:.0f} ms for the person's click")
        if fake is not None:
            say(f"  Twilio      answering in {args.twilio_latency:g} s: the page did not wait")
    say(
        f"  reported    {stats['reported']} Outcome=confirmed post(s), {stats['failed']} failed, "
        f"{reported_ms:.0f} ms after the click, in the background"
    )
    say(f"  result      {'all good' if ok else 'SOMETHING WENT WRONG'}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m twilio_feedback.demo [options]``."""
    parser = argparse.ArgumentParser(
        prog="python -m twilio_feedback.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
