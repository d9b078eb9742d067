"""MkDocs hook: tables generated from the code at build time, so they cannot drift.

- ``<!-- settings-table -->``: every ``Settings`` field (``dataclasses.fields``), the
  environment variables it is read from (``Settings.env_names()``), its type, its default
  and its docstring.
- ``<!-- public-names -->``: every name in ``twilio_feedback.__all__`` with the first
  paragraph of its docstring, linked to its reference page.
- ``<!-- metrics-table -->``: every OpenTelemetry instrument
  (``twilio_feedback.telemetry.INSTRUMENTS``), with its Prometheus name.
- ``<!-- log-events-table -->``: every log event of the package, found by reading the
  source (:func:`log_calls`): its levels, logger, fields and message.

Docstrings come from Griffe with the extension next to this file, so they read exactly as
on the API pages.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path
from typing import Any, NamedTuple

SETTINGS_MARKER = "<!-- settings-table -->"
PUBLIC_MARKER = "<!-- public-names -->"
METRICS_MARKER = "<!-- metrics-table -->"
EVENTS_MARKER = "<!-- log-events-table -->"
ROOT = Path(__file__).resolve().parents[2]

_package: Any = None


def on_pre_build(**kwargs: Any) -> None:
    """Forget the package loaded for a previous build (``mkdocs serve`` rebuilds)."""
    global _package
    _package = None


def package() -> Any:
    """``twilio_feedback`` as Griffe loads it for the API pages."""
    global _package
    if _package is None:
        import griffe

        extension = Path(__file__).with_name("griffe_markdown.py")
        _package = griffe.load(
            "twilio_feedback",
            search_paths=[str(ROOT / "src")],
            extensions=griffe.load_extensions({str(extension): {"warn": False}}),
            resolve_aliases=True,
        )
    return _package


def _cell(docstring: Any) -> str:
    """A docstring's first paragraph as one table cell."""
    text = docstring.value.strip() if docstring is not None else ""
    first = re.split(r"\n\s*\n", text, maxsplit=1)[0]
    return " ".join(first.split())


def _default(field: dataclasses.Field[Any]) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "required"
    if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
        return f"`{','.join(value)}`" if value else "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f"`{value}`"
    if isinstance(value, float) and value >= 3600 and value % 3600 == 0:
        hours = int(value // 3600)
        days, rest = divmod(hours, 24)
        span = f"{days} day{'s' * (days != 1)}" if not rest else f"{hours} h"
        return f"`{value!r}` ({span})"
    return f"`{value!r}`"


def settings_table(settings_class: Any = None) -> str:
    """The Markdown table of every field of ``Settings`` (or of ``settings_class``)."""
    from twilio_feedback.settings import Settings

    cls = Settings if settings_class is None else settings_class
    members = package()["settings.Settings"].members
    env = cls.env_names()
    rows = [
        "| setting and type | environment variable | default | meaning |",
        "|---|---|---|---|",
    ]
    for field in dataclasses.fields(cls):
        names = "<br>".join(f"`{name}`" for name in env[field.name])
        member = members.get(field.name)
        meaning = _cell(member.docstring if member is not None else None)
        rows.append(
            f'| <span id="{field.name}"></span>**`{field.name}`**<br>`{field.type}` '
            f"| {names} | {_default(field)} | {meaning} |"
        )
    return "\n".join(rows)


def public_names_table() -> str:
    """The Markdown table of ``twilio_feedback.__all__``."""
    pkg = package()
    rows = ["| name | what it is |", "|---|---|"]
    for name in pkg.exports or ():
        if name.startswith("__"):
            continue
        target = pkg[name]
        rows.append(f"| [`{name}`][{target.canonical_path}] | {_cell(target.docstring)} |")
    return "\n".join(rows)


def prometheus_name(instrument: Any) -> str:
    """The name Prometheus's exporter gives an instrument: dots become underscores, a
    unit word is appended (``{...}`` annotations are dropped), counters end in ``_total``."""
    name = instrument.name.replace(".", "_")
    unit = {"s": "seconds", "By": "bytes"}.get(instrument.unit)
    if unit:
        name += f"_{unit}"
    if instrument.kind in ("Counter", "ObservableCounter"):
        name += "_total"
    return name


def metrics_table() -> str:
    """The Markdown table of every instrument of ``twilio_feedback.telemetry``."""
    from twilio_feedback.telemetry import INSTRUMENTS

    rows = [
        "| instrument (Prometheus name) | kind, unit | attributes | what it measures |",
        "|---|---|---|---|",
    ]
    for instrument in INSTRUMENTS:
        attributes = "<br>".join(
            [
                f"`{key}`: " + ", ".join(f"`{v}`" for v in values)
                for key, values in instrument.attributes.items()
            ]
            + [f"`{key}`: {what}" for key, what in instrument.open_attributes.items()]
        )
        rows.append(
            f'| <span id="{instrument.name}"></span>`{instrument.name}`<br>'
            f"(`{prometheus_name(instrument)}`) | {instrument.kind}, `{instrument.unit}` "
            f"| {attributes or 'none'} | {instrument.description} |"
        )
    return "\n".join(rows)


LOG_METHODS = frozenset({"debug", "info", "warning", "error", "exception", "critical", "log"})
EVENT_NAME = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)+$")


class LogCall(NamedTuple):
    """One call of a logger's method in the package's source."""

    path: str
    line: int
    logger: str
    level: str
    message: str
    event: str | None
    fields: tuple[str, ...]
    problem: str | None
    """Why its ``extra`` is not a literal dict naming a snake_case ``event`` (or None)."""


def _get_logger(node: ast.AST) -> str | None:
    """The logger name of a ``logging.getLogger("...")`` call ("?" if not a literal)."""
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    named = isinstance(func, ast.Attribute) and func.attr == "getLogger"
    if not (named or (isinstance(func, ast.Name) and func.id == "getLogger")):
        return None
    first = node.args[0] if node.args else None
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return first.value
    return "?" if node.args else "root"


def _log_call(path: str, node: ast.Call, logger: str) -> LogCall:
    assert isinstance(node.func, ast.Attribute)
    level = node.func.attr
    args = list(node.args)
    if level == "log" and args:
        first = args.pop(0)
        level = getattr(first, "attr", "?").lower()
    message = ""
    if args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str):
        message = args[0].value
    extra = next((k.value for k in node.keywords if k.arg == "extra"), None)
    event, fields, problem = None, (), None
    if extra is None:
        problem = "no extra="
    elif not isinstance(extra, ast.Dict) or not all(
        isinstance(k, ast.Constant) and isinstance(k.value, str) for k in extra.keys
    ):
        problem = "extra= is not a dict literal with string keys"
    else:
        values = {k.value: v for k, v in zip(extra.keys, extra.values, strict=True)}  # type: ignore[union-attr]
        found = values.pop("event", None)
        if not (isinstance(found, ast.Constant) and isinstance(found.value, str)):
            problem = "extra= has no literal 'event'"
        elif not EVENT_NAME.match(found.value):
            problem = f"event {found.value!r} is not snake_case"
        else:
            event = found.value
        fields = tuple(values)
    return LogCall(path, node.lineno, logger, level, message, event, fields, problem)


def log_calls(src: Path | None = None) -> list[LogCall]:
    """Every call of a logger's method (``logger.warning(...)``, ``logging.info(...)``)
    in the package's source, in file and line order."""
    src = src or ROOT / "src" / "twilio_feedback"
    calls = []
    for path in sorted(src.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        loggers = {"logging": "root"}
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and (name := _get_logger(node.value)) is not None:
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        loggers[target.id] = name
        relative = path.relative_to(src.parent).as_posix()
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LOG_METHODS
            ):
                continue
            owner = node.func.value
            logger = _get_logger(owner)
            if logger is None and isinstance(owner, ast.Name):
                logger = loggers.get(owner.id)
            if logger is not None:
                calls.append(_log_call(relative, node, logger))
    return sorted(calls, key=lambda c: (c.path, c.line))


def log_events_table() -> str:
    """The Markdown table of every log event: levels, logger, fields and messages."""
    order = ["critical", "error", "warning", "info", "debug"]
    events: dict[str, list[LogCall]] = {}
    for call in log_calls():
        if call.event is not None:
            events.setdefault(call.event, []).append(call)
    rows = ["| event | level | logger | fields | message |", "|---|---|---|---|---|"]
    for event in sorted(events):
        calls = events[event]
        named = {"error" if c.level == "exception" else c.level for c in calls}
        levels = sorted(named, key=lambda v: order.index(v) if v in order else len(order))
        fields = dict.fromkeys(f for c in calls for f in c.fields)
        messages = dict.fromkeys(" ".join(c.message.split()) for c in calls if c.message)
        rows.append(
            f'| <span id="{event}"></span>`{event}` '
            f"| {', '.join(v.upper() for v in levels)} "
            f"| {', '.join(sorted({f'`{c.logger}`' for c in calls}))} "
            f"| {', '.join(f'`{f}`' for f in fields) or 'none'} "
            f"| {'<br>'.join(_escape(m) for m in messages)} |"
        )
    return "\n".join(rows)


def _escape(text: str) -> str:
    """A message template as table cell text: code, with pipes escaped."""
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Replace the markers with the generated tables."""
    if SETTINGS_MARKER in markdown:
        table = f'<div class="settings-table" markdown>\n\n{settings_table()}\n\n</div>'
        markdown = markdown.replace(SETTINGS_MARKER, table)
    if PUBLIC_MARKER in markdown:
        markdown = markdown.replace(PUBLIC_MARKER, public_names_table())
    if METRICS_MARKER in markdown:
        markdown = markdown.replace(METRICS_MARKER, metrics_table())
    if EVENTS_MARKER in markdown:
        markdown = markdown.replace(EVENTS_MARKER, log_events_table())
    return markdown
