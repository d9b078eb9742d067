"""``twilio-feedback emulator``: FakeTwilio for local development, until Ctrl-C (or a
SIGTERM: ``docker stop``, a process manager).

Serves the emulator on 127.0.0.1, prints the environment variables that point an app at
it, then one line for every message the app sends through it (the text, tracking link
included, as the phone would show it) and for every feedback post.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import TextIO

from .fake_twilio import FakeTwilio

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="port on 127.0.0.1 (default: any free one); a fixed one keeps the settings",
    )
    parser.add_argument("--account-sid", metavar="AC...", help="default: a random one")
    parser.add_argument("--auth-token", metavar="TOKEN", help="default: a random one")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Serve until interrupted; return the exit code (0 after Ctrl-C or SIGTERM)."""
    out = out or sys.stdout
    try:
        fake = FakeTwilio(args.account_sid, args.auth_token, port=args.port).start()
    except ValueError as exc:  # a malformed account SID
        print(f"twilio-feedback emulator: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"twilio-feedback emulator: cannot listen on port {args.port}: {exc}", file=sys.stderr
        )
        return 2
    try:
        with _sigterm_interrupts():
            _say(out, f"FakeTwilio, the Twilio emulator, serves {fake.base_url} (Ctrl-C stops it).")
            _say(out, "Point your app at it with these settings:\n")
            for name, value in fake.environ().items():
                _say(out, f"export {name}={value}")
            _say(out, "\nMessages sent through it, and feedback posts, show below.")
            _watch(fake, out)
    except KeyboardInterrupt:
        _say(out, "stopped")
    finally:
        fake.stop()
    return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM stops the emulator as Ctrl-C does (where signals can be handled: the main
    thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _watch(fake: FakeTwilio, out: TextIO) -> None:
    shown = [0, 0]  # messages, feedback posts

    def news() -> bool:
        return len(fake.messages) > shown[0] or len(fake.feedback) > shown[1]

    while True:
        # Wakes on every request; the timeout only bounds how long Ctrl-C may wait.
        fake.wait_for(news, timeout=1.0)
        for message in fake.messages[shown[0] :]:
            _say(out, f"message  {message.sid} to {message.to}: {message.body}")
            shown[0] += 1
        for post in fake.feedback[shown[1] :]:
            _say(out, f"feedback {post.message_sid} Outcome={post.outcome}")
            shown[1] += 1


def _say(out: TextIO, line: str) -> None:
    out.write(line + "\n")
    out.flush()
