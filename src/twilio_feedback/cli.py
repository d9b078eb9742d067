"""The ``twilio-feedback`` command: the demo, and operations on a store."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .errors import ConfigurationError, TwilioFeedbackError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from . import __version__
    from .demo import __doc__ as demo_doc
    from .demo import add_arguments as demo_arguments

    parser = argparse.ArgumentParser(
        prog="twilio-feedback",
        description="Close Twilio's Message Feedback loop: demo and store operations.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo_arguments(
        commands.add_parser(
            "demo",
            help="run the whole loop against the built-in Twilio emulator",
            description=demo_doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``twilio-feedback`` console script; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from .demo import run

            return run(args)
    except (ConfigurationError, TwilioFeedbackError) as exc:
        print(f"twilio-feedback: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command!r}")
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
