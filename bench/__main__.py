"""Run every benchmark and write bench/RESULTS.md: ``python -m bench [--quick] [--only NAME]``."""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.metadata
import sys
import time
from pathlib import Path

from .common import Section, machine

BENCHES = ["passthrough", "confirm_latency", "tokens", "delivery", "stores"]
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


def render(sections: list[Section], quick: bool, seconds: float) -> str:
    versions = ", ".join(f"{name} {importlib.metadata.version(name)}" for name in PACKAGES)
    lines = [
        "# Benchmark results",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
        f"{' (quick run)' if quick else ''}, {seconds:.0f} s in all",
        f"- Machine: {machine()}",
        f"- Versions: {versions}",
        "- Method: every figure compares cases measured side by side in one run, in "
        "interleaved rounds; medians with the interquartile range. Everything on 127.0.0.1.",
        "- Reproduce: `.venv/bin/python -m bench` (add `--quick` for a short run).",
        "",
    ]
    for section in sections:
        lines += [
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
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, smaller loads")
    parser.add_argument("--only", action="append", choices=BENCHES, help="run only these")
    parser.add_argument("--output", default=str(Path(__file__).with_name("RESULTS.md")))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    sections = []
    for name in args.only or BENCHES:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        module = importlib.import_module(f"bench.bench_{name}")
        section = module.run(quick=args.quick)
        for figure in section.figures:
            print(f"  {figure.name}: {figure.value} {figure.verdict}", file=sys.stderr)
        sections.append(section)
    text = render(sections, args.quick, time.perf_counter() - started)
    Path(args.output).write_text(text)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
