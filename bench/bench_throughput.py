"""Confirm throughput of one server process, its scaling over workers, and its profile.

One uvicorn worker pinned to core 0 (``taskset -c 0``) serves ``bench.inside_app``; wrk on
core 1 (``taskset -c 1``, 20 connections, a Lua script walking a file of distinct tokens,
so every confirm is a first-time one) measures the confirm route's rate against the bare
route's on the same server, in interleaved rounds. FakeTwilio answers the in-process
reporter at once from its own process, and the store servers, both on core 1 with wrk.
After each confirm round the reporter is let finish its posts, and the server's CPU is
counted until it has: CPU per confirm includes its report. Then 1, 2 and 4 workers
(unpinned) on PostgreSQL and Redis, with every process's CPU, and a py-spy profile of a
confirm run on each. With ``BENCH_BASELINE=<git ref>``, a server running that ref's
library runs beside this tree's, interleaved: before and after in one run.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib.util
import json
import os
import re
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .bench_confirm_inside import issue, store_urls
from .common import Figure, Section, median, spread
from .serve import PURE_PYTHON, STANDARD

CONNECTIONS = 20
BACKENDS = ["memory", "sqlite", "postgresql", "redis"]
# BENCH_BACKENDS=redis,sqlite runs those only; BENCH_VARIANTS=thread|off,thread and
# BENCH_SCALING=0 trim the run further (a quick before/after while working on one store).
if os.environ.get("BENCH_BACKENDS"):
    BACKENDS = [b for b in BACKENDS if b in os.environ["BENCH_BACKENDS"].split(",")]
TARGET = {"memory": None, "redis": 0.5, "sqlite": 0.4, "postgresql": 0.4}
SCALING = ["postgresql", "redis"]
PROFILED = ["redis", "postgresql"]
# The `reporter="off"` variant (web processes only write the store) arrives with another
# issue: when Settings has a `reporter` field, its "off" runs too, as its own lines.
REPORTER_VARIANTS = ["thread"]
if "reporter" in {f.name for f in dataclasses.fields(__import__("twilio_feedback").Settings)}:
    REPORTER_VARIANTS.append("off")
if os.environ.get("BENCH_VARIANTS"):
    REPORTER_VARIANTS = os.environ["BENCH_VARIANTS"].split(",")
SCALING = [b for b in SCALING if b in BACKENDS and os.environ.get("BENCH_SCALING") != "0"]
PROFILED = [b for b in PROFILED if b in BACKENDS]

# uvicorn's HTTP parser and event loop: the pure-Python pair (its default without extras)
# and uvicorn[standard]'s (httptools and uvloop: what most deployments install), each server
# configuration measured on its own lines. BENCH_STACKS=h11 or BENCH_STACKS=httptools runs
# one of them.
STACKS = {"h11 + asyncio": PURE_PYTHON, "httptools + uvloop": STANDARD}
if os.environ.get("BENCH_STACKS"):
    STACKS = {
        name: args
        for name, args in STACKS.items()
        if any(name.startswith(wanted) for wanted in os.environ["BENCH_STACKS"].split(","))
    }

# BENCH_BASELINE=<git ref> (e.g. main): each backend also runs a server with that ref's
# twilio_feedback, its rounds interleaved with this tree's: before and after in one run.
BASELINE = os.environ.get("BENCH_BASELINE") or None

WALK = str(Path(__file__).with_name("walk.lua"))
PROFILE_RATE = 200


@dataclasses.dataclass
class Phase:
    """One load run: its rate and the CPU each party used."""

    requests: int
    seconds: float
    server: float  # CPU seconds of the serving process(es) during the run
    loop: float  # ... of which the single worker's main (event loop) thread
    drain: float  # server CPU after the run, until the reporter had posted everything
    store: float
    twilio: float
    loadgen: float
    errors: int

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds

    def cpu_per_request(self) -> float:
        """Server CPU seconds per request, its reports included."""
        return (self.server + self.drain) / max(self.requests, 1)


def _hiredis() -> bool:
    return importlib.util.find_spec("hiredis") is not None


def _wrk(
    port: int, paths: list[str], seconds: float, cpus: str | None, threads: int
) -> tuple[int, float, int]:
    from .serve import taskset

    if len(paths) < threads:  # every wrk thread walks its own share
        paths = paths * threads
    with tempfile.NamedTemporaryFile("w", suffix=".paths", delete=False) as handle:
        handle.write("\n".join(paths))
    if shutil.which("wrk") is None:
        done = subprocess.run(
            [
                *taskset(cpus),
                sys.executable,
                "-m",
                "bench.loadgen",
                str(port),
                handle.name,
                "--clients",
                str(CONNECTIONS),
                "--duration",
                str(seconds),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(done.stdout)
        errors = result["requests"] - result["statuses"].get("200", 0)
        return result["requests"], result["seconds"], errors
    env = {**os.environ, "BENCH_PATHS": handle.name, "BENCH_THREADS": str(threads)}
    done = subprocess.run(
        [
            *taskset(cpus),
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(CONNECTIONS),
            "-d",
            f"{seconds:g}s",
            "-s",
            WALK,
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    out = done.stdout
    found = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if found is None:
        raise RuntimeError(f"wrk said:\n{out}\n{done.stderr}")
    elapsed = float(found.group(2)) / (1000 if found.group(3) == "ms" else 1)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    errors = int(bad.group(1)) if bad else 0
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    return int(found.group(1)), elapsed, errors


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Bench:
    """The parties of one configuration and how to measure a phase on them."""

    def __init__(self, server: Any, store_pids: Any, twilio: Any, wrk_cpus: str | None) -> None:
        self.server = server
        self.store_pids = store_pids
        self.twilio = twilio
        self.wrk_cpus = wrk_cpus
        self.threads = 1 if wrk_cpus else 2

    def phase(self, paths: list[str], seconds: float, drain: Any = None) -> Phase:
        from .serve import cpu_seconds, thread_seconds

        workers = self.server.worker_pids()
        store = self.store_pids()
        single = self.server.workers == 1
        s0, st0, t0, w0 = (
            cpu_seconds(workers),
            cpu_seconds(store),
            cpu_seconds([self.twilio.pid]),
            _children_cpu(),
        )
        l0 = thread_seconds(workers[0])[0] if single else 0.0
        requests, elapsed, errors = _wrk(
            self.server.port, paths, seconds, self.wrk_cpus, self.threads
        )
        s1, st1, t1, w1 = (
            cpu_seconds(workers),
            cpu_seconds(store),
            cpu_seconds([self.twilio.pid]),
            _children_cpu(),
        )
        l1 = thread_seconds(workers[0])[0] if single else 0.0
        drained = 0.0
        if drain is not None:
            drain()
            drained = cpu_seconds(workers) - s1
        return Phase(
            requests, elapsed, s1 - s0, l1 - l0, drained, st1 - st0, t1 - t0, w1 - w0, errors
        )


def _drain_single(server: Any) -> Any:
    def wait() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if server.get("/_stats")["tracker"]["pending"] == 0:
                return
            time.sleep(0.2)

    return wait


def _outbox(url: str) -> Any:
    """A callable: confirmed records not yet reported, in the shared store."""
    from twilio_feedback.stores import store_from_url

    store = store_from_url(url)

    def waiting() -> int:
        if hasattr(store, "outbox") and hasattr(store, "client"):
            return int(store.client.zcard(store.outbox))
        return int(store.counts()["confirmed"])

    return waiting


def _drain_shared(url: str) -> Any:
    waiting = _outbox(url)

    def wait() -> None:
        deadline = time.monotonic() + 300
        while waiting() > 0 and time.monotonic() < deadline:
            time.sleep(0.5)

    return wait


def _profile(pid: int, seconds: float, out: str) -> str | None:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not os.path.exists(py_spy):
        return None
    for native in (["--native"], []):
        done = subprocess.run(
            [
                "taskset",
                "-c",
                "1",
                py_spy,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(int(seconds)),
                "--rate",
                str(PROFILE_RATE),
                "--gil",
                "--format",
                "raw",
                "-o",
                out,
                *native,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == 0 and os.path.getsize(out) > 0:
            return "py-spy record --gil --native" if native else "py-spy record --gil"
    return None


_LINE = re.compile(r":\d+\)$")
BUCKETS = [
    ("twilio_feedback/stores/redis", "store: twilio_feedback.stores.redis"),
    ("twilio_feedback/stores/sql", "store: twilio_feedback.stores.sql"),
    ("twilio_feedback/stores/base", "store: ThreadedAsyncStore (to_thread)"),
    ("twilio_feedback/tokens", "twilio_feedback.tokens (verify)"),
    ("twilio_feedback/bots", "twilio_feedback.bots (user agent)"),
    ("twilio_feedback/confirm", "twilio_feedback.confirm (gate)"),
    ("twilio_feedback/asgi", "twilio_feedback.asgi (middleware)"),
    ("twilio_feedback/tracker", "twilio_feedback.tracker"),
    ("twilio_feedback/reporter", "twilio_feedback.reporter"),
    ("twilio_feedback/twilio_api", "twilio_feedback.twilio_api"),
    ("redis/", "redis-py"),
    ("sqlalchemy/", "SQLAlchemy"),
    ("psycopg/", "psycopg"),
    ("psycopg_binary", "psycopg"),
    ("twilio/", "twilio (client library)"),
    ("requests/", "requests / urllib3 / http.client"),
    ("urllib3/", "requests / urllib3 / http.client"),
    ("http/client", "requests / urllib3 / http.client"),
    ("h11/", "uvicorn + h11 (HTTP)"),
    ("uvicorn/", "uvicorn + h11 (HTTP)"),
    ("starlette/", "Starlette"),
    ("bench/inside_app", "the bench app"),
    ("concurrent/futures", "thread pool (to_thread)"),
    ("asyncio/", "asyncio (event loop)"),
    ("selectors", "asyncio (event loop)"),
    ("threading", "threads, locks, queues"),
    ("queue", "threads, locks, queues"),
    ("logging/", "logging"),
    ("json/", "json"),
]


# Frames at the root of every stack of a thread (the interpreter, uvicorn's start, the event
# loop's and threads' run loops): left out of the cumulative ranking, which they would top.
SCAFFOLD = (
    "<frozen runpy>",
    "click/",
    "uvicorn/main.py",
    "uvicorn/__main__.py",
    "uvicorn/server.py",
    "uvicorn/_compat.py",
    "asyncio/runners.py",
    "run_forever (",
    "run_until_complete (",
    "_run_once (",
    "Handle._run (",
    "(threading.py)",
)


def _bucket(frames: list[str]) -> str:
    for frame in reversed(frames):
        for needle, name in BUCKETS:
            if needle in frame:
                return name
    return "other"


def _digest(path: str, cpu_per_confirm: float) -> dict[str, Any]:
    """Top functions by cumulative and self time, and time by component, from py-spy's
    raw (collapsed) stacks: each one's share of the samples, and that share of the
    server's CPU per confirm in µs (the profiler's pauses would inflate samples / rate)."""
    cumulative: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    buckets: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_LINE.sub(")", f) for f in stack.split(";")]
        total += count
        python = [f for f in frames if ".py)" in f]
        for name in set(python):
            if not any(needle in name for needle in SCAFFOLD):
                cumulative[name] += count
        leaf = python[-1] if python else frames[-1]
        own[leaf] += count
        buckets[_bucket(python or frames)] += count
        if any("_bootstrap (threading.py)" in f for f in frames):
            worker = "other threads"
            if any("twilio_feedback/reporter" in f for f in frames):
                worker = "reporter threads"
            elif any("concurrent/futures/thread" in f for f in frames):
                worker = "to_thread workers"
            threads[worker] += count
        else:
            threads["event loop (main) thread"] += count
    scale = cpu_per_confirm * 1e6 / max(total, 1)
    return {
        "total": total,
        "cumulative": [(n, c * scale, c / total) for n, c in cumulative.most_common(15)],
        "self": [(n, c * scale, c / total) for n, c in own.most_common(15)],
        "buckets": [(n, c * scale, c / total) for n, c in buckets.most_common()],
        "threads": [(n, c * scale, c / total) for n, c in threads.most_common()],
    }


def _table(title: str, rows: list[tuple[str, float, float]]) -> str:
    lines = [f"| {title} | µs per confirm | share |", "|---|---|---|"]
    for name, micros, share in rows:
        lines.append(f"| `{name[:110]}` | {micros:.1f} | {share:.1%} |")
    return "\n".join(lines)


def _store_pids(backend: str, redis_server: Any, pg_server: Any) -> Any:
    from .serve import postgres_pids

    if backend == "redis":
        return lambda: [redis_server.process.pid]
    if backend == "postgresql":
        return lambda: postgres_pids(pg_server)
    return list


def run(quick: bool = False) -> Section:
    """Measure and return the section."""
    from .bench_stores import _servers
    from .serve import AppServer, baseline_env, pin, postgres_pids, remote_twilio

    seconds = 2.0 if quick else 10.0
    rounds = 2 if quick else 3
    worker_counts = [1, 4] if quick else [1, 2, 4]
    section = Section("Confirm throughput of one server process (wrk, distinct first-time tokens)")
    started = time.perf_counter()
    load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
    tool = "wrk" if shutil.which("wrk") else "bench.loadgen (Python; wrk is missing)"
    stacks, missing = _stacks()
    redis_server, pg_server = _servers()
    profiles: dict[str, Any] = {}
    baseline = baseline_env(BASELINE) if BASELINE else {}
    try:
        with remote_twilio(5_000, cpus="1") as twilio:
            section.figures += post_cpu(twilio, posts=300 if quick else 1000)
            for variant in REPORTER_VARIANTS:
                extra = {} if variant == "thread" else {"BENCH_REPORTER": variant}
                for backend in BACKENDS:
                    if variant == "off" and backend == "memory":
                        continue  # refused: no other process could deliver its reports
                    pin([redis_server.process.pid, *postgres_pids(pg_server)], "1")
                    url = store_urls(redis_server, pg_server)[backend]
                    codes: list[tuple[str | None, dict[str, str]]] = [(None, {})]
                    if BASELINE:
                        codes.insert(0, (BASELINE, baseline))
                    benches: list[tuple[tuple[str | None, str], Bench, str]] = []
                    try:
                        for code, env in codes:
                            for stack, args in stacks.items():
                                key = secrets.token_urlsafe(32)
                                server = AppServer(
                                    twilio,
                                    url,
                                    key,
                                    cpus="0",
                                    extra_env={**extra, **env},
                                    stack=args,
                                )
                                stores = _store_pids(backend, redis_server, pg_server)
                                bench = Bench(server, stores, twilio, "1")
                                benches.append(((code, stack), bench, key))
                        results = _single(benches, url, twilio, seconds, rounds)
                        if backend in PROFILED and variant == "thread":
                            for (code, stack), bench, key in benches:
                                name = f"{backend}, {stack}" + (f", {code}" if code else "")
                                profiles[name] = _profiled(bench, url, key, twilio, seconds)
                    finally:
                        for _, bench, _ in benches:
                            bench.server.stop()
                    for ((code, stack), _, _), result in zip(benches, results, strict=True):
                        _report_single(section, backend, variant, result, code, stack)
            for backend in SCALING:
                for stack, args in stacks.items():
                    pin([redis_server.process.pid, *postgres_pids(pg_server)], "0,1")
                    url = store_urls(redis_server, pg_server)[backend]
                    rows = []
                    for workers in worker_counts:
                        key = secrets.token_urlsafe(32)
                        server = AppServer(twilio, url, key, workers=workers, stack=args)
                        try:
                            bench = Bench(
                                server, _store_pids(backend, redis_server, pg_server), twilio, None
                            )
                            rows.append((workers, *_scaled(bench, url, key, twilio, seconds)))
                        finally:
                            server.stop()
                    _report_scaling(section, f"{backend}, {stack}", rows)
    finally:
        redis_server.stop()
        pg_server.stop()
    for backend, profile in profiles.items():
        if profile is None:
            section.notes.append(f"{backend}: no profile (py-spy is missing: pip install py-spy)")
            continue
        how, digest, confirms, cpu = profile
        section.tables.append(
            f"Profile of a confirm run on {backend} ({how}, {PROFILE_RATE} Hz, "
            f"{digest['total']:,} samples of the thread holding the GIL: Python code and "
            "the C code it calls, not system calls made without the GIL such as socket "
            f"reads and writes; {confirms:,} confirms; server CPU "
            f"{cpu * 1e6 / max(confirms, 1):.0f} µs a confirm while profiled, its report "
            "included; µs = share x that, so system calls are spread over the parts). By "
            "thread, then by component (each sample goes to the innermost frame of a known "
            "package):"
        )
        section.tables.append(_table("thread", digest["threads"]))
        section.tables.append(_table("component", digest["buckets"]))
        section.tables.append(
            f"{backend}: top 15 by cumulative time (any Python frame of the stack but the "
            "interpreter's, uvicorn's, the event loop's and threads' own run loops):"
        )
        section.tables.append(_table("function (file)", digest["cumulative"]))
        section.tables.append(
            f"{backend}: top 15 by self time (the innermost Python frame; native frames "
            "below it are folded into it):"
        )
        section.tables.append(_table("function (file)", digest["self"]))
    section.notes += [
        f"Load: {tool}, {CONNECTIONS} connections, {seconds:g} s a run; {rounds} rounds of "
        "bare and confirm runs, their order rotating each round; the rate is the median "
        "over rounds (interquartile range beside it). Each confirm run walks its own file "
        "of fresh tokens (2.5x what the bare rate could use), bound beforehand (in bulk "
        "into the shared stores, through the server for memory); every confirm was a "
        "first-time one (checked against the tracker's counters).",
        "Pinned runs: the server on core 0, wrk, FakeTwilio (answering at once) and the "
        "store servers on core 1. CPU from /proc (utime + stime); the server's CPU per "
        "confirm counts its report too: after each confirm run the reporter is let post "
        "everything, and the server CPU it takes is added. 'Per second of the server's "
        "CPU' = 1 / CPU per request: the rate one fully used core sustains, reports and "
        "all. It is the verdict's measure: wrk's rates move with what else runs on the "
        "machine's cores (the server's core is not reserved for it), its CPU per request "
        "much less.",
        "Scaling runs: nothing pinned; wrk with 2 threads; CPU of every party in % of the "
        "machine's 2 cores (200% = both full).",
        "Server configurations (uvicorn's HTTP parser and event loop), each on lines of its "
        f"own: {'; '.join(name + ': ' + ' '.join(args) for name, args in stacks.items())} "
        "(h11 + asyncio: uvicorn's default without extras; httptools + uvloop: its default "
        "with uvicorn[standard], what most deployments install). Both servers of a backend "
        f"run at once, their rounds interleaved. hiredis "
        f"{'installed' if _hiredis() else 'not installed'} (the Redis store's async twin on "
        "its lean connection with it, on redis.asyncio without).",
        *missing,
        f"{time.perf_counter() - started:.0f} s for this section; load average {load_before} "
        f"before, {' '.join(f'{x:.1f}' for x in os.getloadavg())} after (other work on this "
        "machine shares its cores).",
    ]
    if BASELINE:
        section.notes.append(
            f"Before/after: each backend's lines marked (baseline: {BASELINE}) come from a "
            f"server importing twilio_feedback as it is at `{BASELINE}` (git archive, ahead "
            "of this tree on PYTHONPATH; same bench app, same store), run beside this tree's "
            "server: both up at once, their bare and confirm runs interleaved in rotating "
            "order (BENCH_BASELINE=<git ref> python -m bench --only throughput)."
        )
    if "off" not in REPORTER_VARIANTS:
        section.notes.append(
            'reporter="off": not measured; the setting is not on main yet (another issue). '
            "REPORTER_VARIANTS in bench/bench_throughput.py picks it up when it lands."
        )
    return section


def _stacks() -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """The server configurations this machine can run, and notes on those it cannot."""
    import importlib.util

    stacks, missing = {}, []
    for name, args in STACKS.items():
        absent = [
            m for m in ("httptools", "uvloop") if m in args and not importlib.util.find_spec(m)
        ]
        if absent:
            missing.append(f"{name}: not measured ({' and '.join(absent)} not installed).")
        else:
            stacks[name] = args
    return stacks, missing


def post_cpu(twilio: Any, posts: int = 1000, rounds: int = 7) -> list[Figure]:
    """CPU of one feedback post, in this process, through the library's own post and
    through the official client's request path (``client=``), interleaved rounds against
    FakeTwilio in its own process (answering at once)."""
    import logging

    from twilio.rest import Client

    from twilio_feedback import Settings
    from twilio_feedback.twilio_api import TwilioAPI

    from .common import interleaved

    settings = Settings(
        account_sid=twilio.account_sid,
        auth_token=twilio.auth_token,
        api_base_url=twilio.base_url,
        secret_key=secrets.token_urlsafe(32),
    )
    official = Client(twilio.account_sid, twilio.auth_token)
    official.api.base_url = twilio.base_url.rstrip("/")
    apis = {
        "library's post": TwilioAPI(settings),
        "official client": TwilioAPI(settings, client=official),
    }
    sid = twilio.sids[0]

    def case(api: TwilioAPI) -> Any:
        def run() -> float:
            cpu = time.thread_time()
            for _ in range(posts):
                api.post_feedback(twilio.account_sid, sid)
            return (time.thread_time() - cpu) / posts

        return run

    logging.getLogger("twilio_feedback").setLevel(logging.WARNING)
    for api in apis.values():
        case(api)()  # warm-up: connections open, imports done
    samples = interleaved({name: case(api) for name, api in apis.items()}, rounds)
    lean, slow = median(samples["library's post"]), median(samples["official client"])
    lo, hi = spread(samples["library's post"])
    slo, shi = spread(samples["official client"])
    return [
        Figure(
            "feedback post, CPU of the posting thread: the library's post vs the official "
            "client's request path (client=)",
            f"{lean * 1e6:.0f} vs {slow * 1e6:.0f} µs = {lean / slow:.0%}",
            f"{lo * 1e6:.0f}-{hi * 1e6:.0f} vs {slo * 1e6:.0f}-{shi * 1e6:.0f} µs; {rounds} "
            f"interleaved rounds of {posts:,} posts each, FakeTwilio answering at once",
        )
    ]


def _single(
    benches: list[tuple[Any, Bench, str]],
    url: str,
    twilio: Any,
    seconds: float,
    rounds: int,
) -> list[dict[str, Any]]:
    """Bare and confirm runs on each server (this tree's, and the baseline's when there is
    one), their rounds interleaved, the order rotating each round."""
    count = 0
    for _, bench, _ in benches:
        bench.phase(["/bare"], 2.0)  # warm-up, and the bare rate to size the token files
        calibrate = bench.phase(["/bare"], 2.0)
        # 2.5x: the calibration's 2 s may fall in a busy moment of the machine, and a
        # confirm run that outruns its file walks it again (duplicates, not first-time).
        count = max(count, int(calibrate.rate * seconds * 2.5) + 1000)
    befores = [bench.server.get("/_stats")["tracker"] for _, bench, _ in benches]
    phases: list[dict[str, list[Phase]]] = [{"bare": [], "confirm": []} for _ in benches]
    runs = [(i, kind) for i in range(len(benches)) for kind in ("bare", "confirm")]
    for r in range(rounds):
        for i, kind in runs[r % len(runs) :] + runs[: r % len(runs)]:
            _, bench, key = benches[i]
            if kind == "bare":
                phases[i]["bare"].append(bench.phase(["/bare"], seconds))
            else:
                tokens = issue(bench.server, url, key, count, twilio)
                paths = [f"/confirm?id={t}" for t in tokens]
                phases[i]["confirm"].append(
                    bench.phase(paths, seconds, _drain_single(bench.server))
                )
    results = []
    for (_, bench, _), before, done in zip(benches, befores, phases, strict=True):
        after = bench.server.get("/_stats")["tracker"]
        counts = {k: after[k] - before.get(k, 0) for k in after}
        confirms = sum(p.requests for p in done["confirm"])
        # wrk counts the answers it read before its time was up; the requests still in
        # flight then (one a connection) were confirmed all the same.
        in_flight = counts["confirmed"] - confirms
        assert 0 <= in_flight <= CONNECTIONS * rounds, (counts, confirms)
        assert counts["duplicate"] + counts["unknown"] + counts["invalid"] == 0, counts
        results.append({"phases": done, "counts": counts})
    return results


def _profiled(bench: Bench, url: str, key: str, twilio: Any, seconds: float) -> Any:
    server = bench.server
    seconds = max(5.0, 2 * seconds)
    tokens = issue(
        server, url, key, int(bench.phase(["/bare"], 1.0).rate * seconds * 1.5) + 1000, twilio
    )
    out = tempfile.mktemp(suffix=".pyspy")
    before = server.get("/_stats")["tracker"]["confirmed"]
    result: dict[str, Any] = {}

    def load() -> None:
        time.sleep(0.5)
        result["phase"] = bench.phase([f"/confirm?id={t}" for t in tokens], seconds - 1)

    import threading

    loader = threading.Thread(target=load)
    from .serve import cpu_seconds

    cpu0 = cpu_seconds(server.worker_pids())
    loader.start()
    how = _profile(server.process.pid, seconds + 4, out)  # the load's whole run
    loader.join()
    _drain_single(server)()
    cpu = cpu_seconds(server.worker_pids()) - cpu0
    confirms = server.get("/_stats")["tracker"]["confirmed"] - before
    if how is None:
        return None
    return how, _digest(out, cpu / max(confirms, 1)), confirms, cpu


def _report_single(
    section: Section,
    backend: str,
    variant: str,
    result: dict[str, Any],
    code: str | None = None,
    stack: str | None = None,
) -> None:
    bare, confirm = result["phases"]["bare"], result["phases"]["confirm"]
    ratios = [c.rate / b.rate for b, c in zip(bare, confirm, strict=True)]
    lo, hi = spread([c.rate for c in confirm])
    blo, bhi = spread([b.rate for b in bare])
    label = backend + (f", {stack}" if stack else "")
    label += "" if variant == "thread" else f", reporter={variant}"
    label += f" (baseline: {code})" if code else ""
    bare_cpu = median([b.cpu_per_request() for b in bare])
    confirm_cpu = median([c.cpu_per_request() for c in confirm])
    loop_cpu = median([c.loop / c.requests for c in confirm])
    sustainable = (1 / confirm_cpu) / (1 / bare_cpu)
    target = None if code else TARGET.get(backend)
    section.figures.append(
        Figure(
            f"{label}: confirms/s vs the bare route, 1 worker on core 0 (wrk)",
            f"{median([c.rate for c in confirm]):,.0f} vs {median([b.rate for b in bare]):,.0f}/s "
            f"= {median(ratios):.0%}",
            f"{lo:,.0f}-{hi:,.0f} vs {blo:,.0f}-{bhi:,.0f}/s; reports trail the run (posted "
            "after it)",
            "",
            "",
        )
    )

    def each(party: str) -> str:
        return f"{median([getattr(c, party) / c.requests for c in confirm]) * 1e6:.0f} µs"

    section.figures.append(
        Figure(
            f"{label}: per second of the server's CPU, confirms with their reports vs bare "
            "requests",
            f"{1 / confirm_cpu:,.0f} vs {1 / bare_cpu:,.0f} = {sustainable:.0%}",
            f"server CPU {confirm_cpu * 1e6:.0f} vs {bare_cpu * 1e6:.0f} µs a request; "
            f"{loop_cpu * 1e6:.0f} µs of a confirm on the loop's thread during the run "
            f"({bare_cpu / loop_cpu:.0%} of bare), the rest in other threads (reporter, "
            f"to_thread); store server {each('store')}, FakeTwilio {each('twilio')}, wrk "
            f"{each('loadgen')} a confirm",
            f">= {target:.0%} of bare" if target else "",
            ("met" if sustainable >= target else f"missed ({sustainable:.0%})") if target else "",
        )
    )
    errors = sum(p.errors for p in bare + confirm)
    counts = result["counts"]
    section.notes.append(
        f"{label}: {counts['confirmed']:,} confirms, {counts['reported']:,} reported, "
        f"{counts['duplicate'] + counts['unknown'] + counts['invalid']} not first-time, "
        f"{errors} HTTP errors; the server core was busy "
        f"{median([(c.server) / c.seconds for c in confirm]):.0%} of confirm runs and "
        f"{median([b.server / b.seconds for b in bare]):.0%} of bare runs."
    )


def _scaled(bench: Bench, url: str, key: str, twilio: Any, seconds: float) -> tuple[Phase, Phase]:
    bench.phase(["/bare"], 2.0)  # warm-up
    bare = bench.phase(["/bare"], seconds)
    tokens = issue(bench.server, url, key, int(bare.rate * seconds * 2.5) + 1000, twilio)
    confirm = bench.phase([f"/confirm?id={t}" for t in tokens], seconds, _drain_shared(url))
    return bare, confirm


def _report_scaling(section: Section, backend: str, rows: list[Any]) -> None:
    base = None
    for workers, bare, confirm in rows:
        base = base or confirm.rate
        share = {
            "server": confirm.server,
            "store": confirm.store,
            "FakeTwilio": confirm.twilio,
            "wrk": confirm.loadgen,
        }
        busy = ", ".join(f"{k} {v / confirm.seconds:.0%}" for k, v in share.items())
        section.figures.append(
            Figure(
                f"{backend}: {workers} worker{'s' if workers > 1 else ''}, unpinned: confirms/s "
                "(bare)",
                f"{confirm.rate:,.0f}/s ({bare.rate:,.0f}/s), x{confirm.rate / base:.2f}",
                f"CPU during confirms: {busy}; reports after: server {confirm.drain:.1f} s",
                "scales until the store saturates",
            )
        )
