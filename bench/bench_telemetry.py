"""Metrics: what the OpenTelemetry hooks add to a confirmation, without opentelemetry
installed, with the API only (no SDK configured), and with an SDK configured.

Each case runs in its own interpreter (the import of opentelemetry is blocked in the
first; the SDK is the global provider in the third). In each, a confirmation through the
tracker (the memory store: the cheapest confirm, where an overhead shows most) is timed
with the library's instruments in place and with them switched off, in interleaved
rounds; the difference is what metrics cost per confirmation. The hook alone is timed too,
and, in the SDK case, what a synchronous SDK counter's ``add()`` would have cost instead.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .common import Figure, Section

ROOT = Path(__file__).resolve().parents[1]
MODES = {
    "no opentelemetry": "none",
    "API only, no SDK": "api",
    "SDK configured": "sdk",
}

CHILD = r"""
import json, sys, time
mode, n, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if mode == "none":
    class NoOpenTelemetry:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "opentelemetry":
                raise ImportError(name)
    sys.meta_path.insert(0, NoOpenTelemetry())

from bench.common import interleaved, median, spread, timeit
from twilio_feedback import FeedbackTracker, Settings, telemetry
from twilio_feedback.records import ConfirmResult
from twilio_feedback.stores.memory import MemoryStore

sdk_add = None
if mode == "sdk":
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    counter = metrics.get_meter("bench").create_counter("bench.confirmations")
    attributes = {"outcome": "duplicate"}
    sdk_add = lambda: counter.add(1, attributes)

tracker = FeedbackTracker(Settings(
    account_sid="AC" + "0" * 32, auth_token="x", secret_key="bench-secret-key-0123456789-abcdef",
    store=MemoryStore(), api_base_url="http://127.0.0.1:9",
))
ticket = tracker.ticket()
tracker.bind(ticket, "SM" + "1" * 32)
tracker.confirmer.verify  # warm
token = ticket.token
tracker.confirm_token(token)  # confirmed once (the post fails quietly); duplicates from now on
on = telemetry._confirmations

def confirm(state):
    def case():
        telemetry._confirmations = state
        return timeit(lambda: tracker.confirm_token(token), n)
    return case

result = ConfirmResult("duplicate")

def hook():
    telemetry._confirmations = on
    return timeit(lambda: telemetry.confirm_outcome(result), n * 10)

cases = {
    "confirm, metrics on": confirm(on),
    "confirm, metrics off": confirm(None),
    "hook": hook,
    "empty call": lambda: timeit(lambda: None, n * 10),
}
if sdk_add is not None:
    cases["SDK counter add()"] = lambda: timeit(sdk_add, n)
samples = interleaved(cases, repeats)
telemetry._confirmations = on
tracker.close(timeout=0)
deltas = [a - b for a, b in zip(samples["confirm, metrics on"], samples["confirm, metrics off"])]
hook = [a - b for a, b in zip(samples["hook"], samples["empty call"])]
out = {
    "enabled": on is not None,
    "confirm": median(samples["confirm, metrics off"]),
    "delta": median(deltas),
    "delta_spread": spread(deltas),
    "hook": median(hook),
    "hook_spread": spread(hook),
}
if sdk_add is not None:
    out["sdk_add"] = median(samples["SDK counter add()"])
print(json.dumps(out))
"""


def _child(mode: str, n: int, repeats: int) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(n), str(repeats)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _us(value: object) -> str:
    return f"{float(value) * 1e6:.2f} µs"  # type: ignore[arg-type]


def run(quick: bool = False) -> Section:
    """Measure and return the section."""
    n, repeats = (2_000, 5) if quick else (20_000, 15)
    section = Section("Metrics overhead per confirmation")
    sdk_add = None
    for label, mode in MODES.items():
        got = _child(mode, n, repeats)
        hook = float(got["hook"])  # type: ignore[arg-type]
        hlo, hhi = got["hook_spread"]  # type: ignore[misc]
        target = "< 1 µs" if mode != "sdk" else ""
        section.figures.append(
            Figure(
                f"{label}: the hook, per confirmation",
                _us(hook),
                f"{hlo * 1e6:.3f}-{hhi * 1e6:.3f} µs",
                target,
                ("met" if hook < 1e-6 else "missed") if target else "",
            )
        )
        lo, hi = got["delta_spread"]  # type: ignore[misc]
        section.figures.append(
            Figure(
                f"{label}: a whole confirm (duplicate, memory store), metrics on minus off",
                _us(got["delta"]),
                f"{lo * 1e6:.2f}-{hi * 1e6:.2f} µs, of a {_us(got['confirm'])} confirm",
            )
        )
        if "sdk_add" in got:
            sdk_add = got["sdk_add"]
    if sdk_add is not None:
        section.figures.append(
            Figure("for comparison: one synchronous SDK counter add()", _us(sdk_add))
        )
    section.notes.append(
        "The hook's figure is the call minus an empty call, 10x as many times as a confirm "
        "round: precise. The whole-confirm difference carries the confirm's own noise."
    )
    section.notes.append(
        "Confirm outcomes are counted in process under a lock and read by an observable "
        "counter when the SDK collects, so the request path pays the same with or without "
        "an SDK; the reporter's instruments (reports, retries, failures, drops, durations) "
        "are synchronous, in its own threads, next to a Twilio call of ~100 ms."
    )
    return section
