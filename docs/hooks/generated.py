"""MkDocs hook: tables generated from the code at build time, so they cannot drift.

- ``<!-- settings-table -->``: every ``Settings`` field (``dataclasses.fields``), the
  environment variables it is read from (``Settings.env_names()``), its type, its default
  and its docstring.
- ``<!-- public-names -->``: every name in ``twilio_feedback.__all__`` with the first
  paragraph of its docstring, linked to its reference page.
- ``<!-- metrics-table -->``: every OpenTelemetry instrument
  (``twilio_feedback.telemetry.INSTRUMENTS``), with its Prometheus name.

Docstrings come from Griffe with the extension next to this file, so they read exactly as
on the API pages.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

SETTINGS_MARKER = "<!-- settings-table -->"
PUBLIC_MARKER = "<!-- public-names -->"
METRICS_MARKER = "<!-- metrics-table -->"
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
            f"`{key}`: " + ", ".join(f"`{v}`" for v in values)
            for key, values in instrument.attributes.items()
        )
        rows.append(
            f'| <span id="{instrument.name}"></span>`{instrument.name}`<br>'
            f"(`{prometheus_name(instrument)}`) | {instrument.kind}, `{instrument.unit}` "
            f"| {attributes or 'none'} | {instrument.description} |"
        )
    return "\n".join(rows)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Replace the markers with the generated tables."""
    if SETTINGS_MARKER in markdown:
        table = f'<div class="settings-table" markdown>\n\n{settings_table()}\n\n</div>'
        markdown = markdown.replace(SETTINGS_MARKER, table)
    if PUBLIC_MARKER in markdown:
        markdown = markdown.replace(PUBLIC_MARKER, public_names_table())
    if METRICS_MARKER in markdown:
        markdown = markdown.replace(METRICS_MARKER, metrics_table())
    return markdown
