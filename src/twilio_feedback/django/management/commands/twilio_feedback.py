"""``python manage.py twilio_feedback COMMAND``: the ``twilio-feedback`` command (status,
drain, worker, report, ...), on the project's own settings."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, OutputWrapper

from twilio_feedback import cli
from twilio_feedback.django.conf import get_settings
from twilio_feedback.settings import Settings

_DJANGO_OPTIONS = ("--settings", "--pythonpath")


def _without_django_options(argv: Sequence[str]) -> list[str]:
    """``argv`` without the options ``manage.py`` has already acted on."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _DJANGO_OPTIONS:
            skip = True
        elif not arg.startswith(tuple(f"{o}=" for o in _DJANGO_OPTIONS)):
            kept.append(arg)
    return kept


class _Stream:
    """A management command's output wrapper as a plain text stream, for ``print``."""

    def __init__(self, wrapper: OutputWrapper) -> None:
        self.wrapper = wrapper

    def write(self, text: str) -> int:
        self.wrapper.write(text, ending="")
        return len(text)

    def flush(self) -> None:
        self.wrapper.flush()

    def isatty(self) -> bool:
        return bool(self.wrapper.isatty())


class Command(BaseCommand):
    requires_system_checks: list[str] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Named from the command line's own parser (`manage.py help twilio_feedback`).
        self.help = (
            f"twilio-feedback on this project's store: {', '.join(cli.command_names())}. "
            "'manage.py twilio_feedback --help' tells more."
        )

    def _settings(self) -> Settings:
        try:
            return get_settings()
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc), returncode=2) from None

    def run_from_argv(self, argv: list[str]) -> None:
        """From the command line: the arguments, ``--help`` included, are the
        ``twilio-feedback`` command's; its exit code is this command's."""
        prog = f"{os.path.basename(argv[0])} {argv[1]}"
        args = _without_django_options(argv[2:])
        settings = None
        if args and not {"-h", "--help", "--version"} & set(args):
            try:
                settings = self._settings()
            except CommandError as exc:
                self.stderr.write(f"{prog}: {exc}")
                sys.exit(exc.returncode)
        sys.exit(cli.main(args, settings=settings, prog=prog))

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("arguments", nargs=argparse.REMAINDER, help="COMMAND [OPTIONS]")

    def handle(self, *args: Any, **options: Any) -> None:
        """From ``call_command("twilio_feedback", "status", ...)``: the output goes to the
        command's ``stdout`` and ``stderr``; a failure raises ``CommandError``."""
        argv = [*args, *options.get("arguments", [])]
        settings = self._settings()
        with redirect_stdout(_Stream(self.stdout)), redirect_stderr(_Stream(self.stderr)):
            try:
                code = cli.main(argv, settings=settings, prog="manage.py twilio_feedback")
            except SystemExit as exit_:  # argparse: --help, or a usage error
                code = exit_.code if isinstance(exit_.code, int) else 2
        if code:
            raise CommandError(
                f"twilio_feedback {' '.join(argv)} exited with {code}", returncode=code
            )
