"""Run every benchmark and write bench/RESULTS.md: ``python -m bench [--quick] [--only NAME]``.

A full run rewrites the file. With ``--only``, only the sections of the benchmarks run are
replaced (each says when it was measured, on what); the header and the other sections are
kept as they are.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.metadata
import sys
import time
from pathlib import Path

from .common import Section, machine

BENCHES = [
    "passthrough",
    "confirm_latency",
    "tokens",
    "delivery",
    "stores",
    "soak",
    "telemetry",
    "store_size",
    "confirm_inside",
    "throughput",
    "flat",
    "insights",
]
PACKAGES = [
    "twilio-feedback",
    "twilio",
    "starlette",
    "flask",
    "uvicorn",
    "sqlalchemy",
    "redis",
    "psycopg",
    "itsdangerous",
    "crawler-user-agents",
]


MARKER = "<!-- bench: {} -->"


def _versions() -> str:
    return ", ".join(f"{name} {importlib.metadata.version(name)}" for name in PACKAGES)


def _now() -> str:
    return f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"


def render_section(name: str, section: Section) -> str:
    """One section, behind a marker that names its benchmark (for ``--only`` runs)."""
    lines = [
        MARKER.format(name),
        f"## {section.title}",
        "",
        "| measure | value | spread / detail | target | |",
        "|---|---|---|---|---|",
    ]
    for f in section.figures:
        lines.append(f"| {f.name} | {f.value} | {f.spread} | {f.target} | {f.verdict} |")
    lines.append("")
    lines += [f"- {note}" for note in section.notes]
    lines.append("")
    for block in section.tables:
        lines += [block, ""]
    return "\n".join(lines)


def render(sections: dict[str, Section], quick: bool, seconds: float) -> str:
    """The whole file, after a full run."""
    header = [
        "# Benchmark results",
        "",
        f"- Date: {_now()}{' (quick run)' if quick else ''}, {seconds:.0f} s in all",
        f"- Machine: {machine()}",
        f"- Versions: {_versions()}",
        "- Method: every figure compares cases measured side by side in one run, in "
        "interleaved rounds; medians with the interquartile range. Everything on 127.0.0.1.",
        "- Reproduce: `.venv/bin/python -m bench` (add `--quick` for a short run).",
    ]
    parts = ["\n".join(header), *(render_section(n, s) for n, s in sections.items())]
    return _join(parts)


def _join(parts: list[str]) -> str:
    """Blocks separated by one blank line, the file ending in one newline."""
    return "\n\n".join(part.strip("\n") for part in parts) + "\n"


def _marker(line: str) -> str | None:
    prefix, suffix = MARKER.split("{}")
    line = line.strip()
    if line.startswith(prefix) and line.endswith(suffix):
        return line[len(prefix) : -len(suffix)]
    return None


def _blocks(text: str) -> tuple[str, list[tuple[str, str]]]:
    """The header and ``(key, text)`` of each section. The key is the benchmark's name
    from the marker line above the title, or the title itself (a section written before
    markers existed)."""
    lines = text.splitlines(keepends=True)
    starts = []
    for n, line in enumerate(lines):
        if line.startswith("## "):
            marked = n > 0 and _marker(lines[n - 1]) is not None
            starts.append((n - 1 if marked else n, _marker(lines[n - 1]) if marked else None))
    if not starts:
        return text, []
    header = "".join(lines[: starts[0][0]])
    blocks = []
    for (first, name), (end, _) in zip(starts, [*starts[1:], (len(lines), None)], strict=True):
        chunk = lines[first:end]
        title = (chunk[1] if name is not None else chunk[0])[3:].strip()
        blocks.append((name or title, "".join(chunk)))
    return header, blocks


def merge(existing: str, sections: dict[str, Section], quick: bool) -> str:
    """``existing`` with the sections of the benchmarks just run replaced (or added at the
    end), each dated; the header and every other section are kept as they are."""
    header, blocks = _blocks(existing)
    fresh = {}
    for name, section in sections.items():
        dated = Section(section.title, section.figures, list(section.notes), section.tables)
        dated.notes.append(
            f"Measured {_now()}{' (quick run)' if quick else ''} with `--only {name}` on "
            f"{machine()}; {_versions()}."
        )
        fresh[name] = render_section(name, dated)
    by_title = {section.title: name for name, section in sections.items()}
    parts, done = [header], set()
    for key, text in blocks:
        name = key if key in fresh else by_title.get(key)
        if name is None:
            parts.append(text)
        elif name not in done:
            parts.append(fresh[name])
            done.add(name)
    parts += [text for name, text in fresh.items() if name not in done]
    return _join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, smaller loads")
    parser.add_argument("--only", action="append", choices=BENCHES, help="run only these")
    parser.add_argument("--output", default=str(Path(__file__).with_name("RESULTS.md")))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    sections = {}
    for name in args.only or BENCHES:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        module = importlib.import_module(f"bench.bench_{name}")
        section = module.run(quick=args.quick)
        for figure in section.figures:
            print(f"  {figure.name}: {figure.value} {figure.verdict}", file=sys.stderr)
        sections[name] = section
    output = Path(args.output)
    if args.only and output.exists():
        text = merge(output.read_text(), sections, args.quick)
    else:
        text = render(sections, args.quick, time.perf_counter() - started)
    output.write_text(text)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
