"""Shared helpers: interleaved repetition, medians and spreads, the results table."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Figure:
    """One benchmark line: a name, a value, its spread, and the target it answers."""

    name: str
    value: str
    spread: str = ""
    target: str = ""
    verdict: str = ""


@dataclass
class Section:
    """A benchmark's figures and notes."""

    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    """Further Markdown blocks (a caption, a table, ...) shown after the notes."""


def timeit(fn: Callable[[], object], number: int) -> float:
    """Seconds per call of ``fn`` over ``number`` calls."""
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def interleaved(cases: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run every case once per round, ``repeats`` rounds, rotating the order each round so
    that drift (thermal, noisy neighbours) hits every case alike."""
    names = list(cases)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(cases[name]())
    return samples


def median(values: list[float]) -> float:
    """The median."""
    return statistics.median(values)


def spread(values: list[float]) -> tuple[float, float]:
    """The interquartile range (25th, 75th percentile)."""
    if len(values) < 4:
        return min(values), max(values)
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def ratio_samples(num: list[float], den: list[float]) -> list[float]:
    """Per-round ratios (rounds are interleaved, so each pair shares its conditions)."""
    return [a / b for a, b in zip(num, den, strict=True)]


def fmt_ratio(values: list[float]) -> tuple[str, str]:
    """``("1.03x", "1.01-1.05")`` from per-round ratios."""
    lo, hi = spread(values)
    return f"{median(values):.3f}x", f"{lo:.3f}-{hi:.3f}"


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of ``values`` (0-100)."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def machine() -> str:
    """One line describing where the numbers came from."""
    import os

    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def django_databases(databases: dict[str, dict[str, Any]]) -> None:
    """Configure Django with ``databases`` (``DATABASES`` entries by alias), or add them
    to the configuration a section before this one made, and migrate each (this app's
    migrations). Aliases already there are left as they are."""
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections

    import django

    if not settings.configured:
        first = dict(databases)
        first.setdefault("default", {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"})
        settings.configure(DATABASES=first, INSTALLED_APPS=["twilio_feedback.django"], USE_TZ=True)
        django.setup()
    else:
        for alias, entry in databases.items():
            settings.DATABASES.setdefault(alias, entry)
        connections.configure_settings(settings.DATABASES)
    for alias in databases:
        call_command("migrate", database=alias, verbosity=0)
