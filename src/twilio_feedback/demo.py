"""Run the whole loop on this machine, against the built-in Twilio emulator.

Starts FakeTwilio and a small WSGI app wrapped in FeedbackMiddleware on 127.0.0.1, sends a
tracked message through the official twilio client, lets a link-preview bot fetch the link
(ignored), opens it as the person would (confirmed, at once, although "Twilio" takes half
a second to answer), shows the feedback arriving, and opens it again (duplicate).

--interactive prints the link and waits for you to open it in a browser.
--live sends a real SMS with the credentials in TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN.
"""

from __future__ import annotations

import argparse
import html
import secrets
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, TextIO
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from .records import ConfirmResult
from .settings import Settings
from .stores.memory import MemoryStore
from .testing import FakeTwilio
from .tracker import FeedbackTracker

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["add_arguments", "run"]

IMESSAGE_PREVIEW = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_1) AppleWebKit/601.2.4 (KHTML, like Gecko) "
    "Version/9.0.1 Safari/601.2.4 facebookexternalhit/1.1 Facebot Twitterbot/1.0"
)
PHONE_BROWSER = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options to ``parser``."""
    parser.add_argument(
        "--interactive", action="store_true", help="wait for you to open the link yourself"
    )
    parser.add_argument(
        "--live", action="store_true", help="send a real SMS (credentials from the environment)"
    )
    parser.add_argument("--to", default="+15558675310", help="recipient (default: a test number)")
    parser.add_argument("--from", dest="from_", default="+15017122661", help="sender number")
    parser.add_argument(
        "--twilio-latency",
        type=float,
        default=0.5,
        help="seconds the emulator takes to answer (default 0.5)",
    )


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Keep the demo's output readable."""


def _app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    result: ConfirmResult | None = environ.get("twilio_feedback.result")
    if result is None:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    text = {
        "confirmed": "Thanks, you're signed in.",
        "duplicate": "You're already signed in.",
        "ignored": "Sign-in link.",
    }.get(result.status, "This link is not valid any more.")
    page = f"<h1>{html.escape(text)}</h1><p>status: {html.escape(result.status)}</p>"
    start_response(
        "200 OK",
        [("Content-Type", "text/html; charset=utf-8"), ("X-Confirm-Status", result.status)],
    )
    return [page.encode()]


def _fetch(url: str, user_agent: str) -> tuple[str, float]:
    started = time.perf_counter()
    request = urllib.request.Request(url, headers={"User-Agent": user_agent})
    with urllib.request.urlopen(request, timeout=10) as response:
        status = response.headers.get("X-Confirm-Status", "?")
        response.read()
    return status, (time.perf_counter() - started) * 1000


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the demo; return the exit code (0 when every step did what it should)."""
    out = out or sys.stdout

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    from .wsgi import FeedbackMiddleware

    fake: FakeTwilio | None = None
    if args.live:
        settings = Settings.from_env(store=MemoryStore())
        say("Live mode: sending a real SMS through " + settings.api_base_url)
    else:
        fake = FakeTwilio().start()
        fake.latency = args.twilio_latency
        settings = Settings(
            account_sid=fake.account_sid,
            auth_token=fake.auth_token,
            secret_key=secrets.token_urlsafe(32),
            store=MemoryStore(),
            api_base_url=fake.base_url,
        )
    tracker = FeedbackTracker(settings)
    app = FeedbackMiddleware(_app, tracker)
    server = make_server("127.0.0.1", 0, app, server_class=_Server, handler_class=_QuietHandler)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    app_url = f"http://127.0.0.1:{server.server_port}"
    ok = True
    try:
        say("twilio-feedback demo")
        say("=" * 60)
        if fake is not None:
            say(f"Twilio emulator   {fake.base_url}  (answers in {args.twilio_latency:g} s)")
        say(f"Your app          {app_url}  (FeedbackMiddleware on /confirm)")
        say()
        started = time.perf_counter()
        message = tracker.send(
            to=args.to,
            from_=args.from_,
            body="Your sign-in link: {link}",
            link=f"{app_url}/confirm",
        )
        say(
            f"1. Sent {message.sid} with ProvideFeedback=true "
            f"({(time.perf_counter() - started) * 1000:.0f} ms)"
        )
        body = str(message.body)
        link = body.rsplit(" ", 1)[-1]
        say(f"   body: {body!r} ({len(body)} characters)")
        if fake is not None:
            ok &= fake.messages[-1].provide_feedback
        if args.interactive or args.live:
            say(f"\nOpen this link in a browser on this machine:\n\n    {link}\n")
            say("Waiting for the confirmation (Ctrl-C to stop)...")
            while tracker.stats()["confirmed"] == 0:
                time.sleep(0.2)
            say("   confirmed by your visit")
        else:
            status, ms = _fetch(link, IMESSAGE_PREVIEW)
            say(f"2. iMessage's link preview fetched it   -> {status:<9} ({ms:.0f} ms)")
            ok &= status == "ignored"
            status, ms = _fetch(link, PHONE_BROWSER)
            say(
                f"3. The person opened it                 -> {status:<9} ({ms:.0f} ms: "
                "the response did not wait for Twilio)"
            )
            ok &= status == "confirmed"
        waited = time.perf_counter()
        pending = tracker.flush(timeout=15)
        say(
            f"4. Feedback reported in the background  -> "
            f"{'done' if pending == 0 else 'still pending'} "
            f"({(time.perf_counter() - waited) * 1000:.0f} ms later)"
        )
        ok &= pending == 0
        if fake is not None:
            posts = fake.feedback
            for post in posts:
                say(
                    f"   POST /2010-04-01/Accounts/{post.account_sid}/Messages/"
                    f"{post.message_sid}/Feedback.json  Outcome={post.outcome}"
                )
            ok &= [p.message_sid for p in posts] == [message.sid]
        if not (args.interactive or args.live):
            status, ms = _fetch(link, PHONE_BROWSER)
            tracker.flush(timeout=5)
            say(f"5. Opened again                         -> {status:<9} (no second report)")
            ok &= status == "duplicate"
            if fake is not None:
                ok &= len(fake.feedback) == 1
        stats = tracker.stats()
        say()
        say(
            f"Summary: {stats['confirmed']} confirmed, {stats['reported']} reported to "
            f"Twilio, {stats['failed']} failed; {'all good' if ok else 'SOMETHING WENT WRONG'}."
        )
    except KeyboardInterrupt:
        say("\nstopped")
        return 130
    finally:
        server.shutdown()
        server.server_close()
        tracker.close(timeout=2)
        if fake is not None:
            fake.stop()
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m twilio_feedback.demo``."""
    parser = argparse.ArgumentParser(prog="twilio-feedback demo", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
