"""Processes for the in-server benchmarks: the app under uvicorn, FakeTwilio in a process
of its own, CPU pinning (``taskset``) and CPU accounting (``/proc``)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

TICK = os.sysconf("SC_CLK_TCK")

PURE_PYTHON = ("--http", "h11", "--loop", "asyncio")
"""uvicorn's pure-Python HTTP parser and event loop: its default without ``uvicorn[standard]``."""
STANDARD = ("--http", "httptools", "--loop", "uvloop")
"""What ``uvicorn[standard]`` (httptools and uvloop installed) makes uvicorn's default."""


def taskset(cpus: str | None) -> list[str]:
    """A command prefix that runs on ``cpus`` only (nothing when ``None``)."""
    if cpus is None:
        return []
    if shutil.which("taskset") is None:
        raise RuntimeError("taskset is missing (apt-get install util-linux)")
    return ["taskset", "-c", cpus]


def pin(pids: list[int], cpus: str) -> None:
    """Move running processes (every thread) to ``cpus``; their future children follow."""
    for pid in pids:
        subprocess.run(
            ["taskset", "-a", "-p", "-c", cpus, str(pid)], check=False, capture_output=True
        )


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += parents.get(current, [])
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by ``pids`` (those still alive)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def thread_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds of a process's main thread (the event loop) and of its other threads."""
    main = others = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used = int(fields[11]) + int(fields[12])
        if int(tid) == pid:
            main += used
        else:
            others += used
    return main / TICK, others / TICK


def schedstat(pid: int, tid: int | None = None) -> tuple[float, float]:
    """Seconds a thread (the main one by default) has run, and has waited runnable for a
    CPU (the scheduler's run queue), from ``/proc/PID/task/TID/schedstat``."""
    try:
        with open(f"/proc/{pid}/task/{tid or pid}/schedstat") as handle:
            ran, waited, _ = handle.read().split()
    except (OSError, ValueError):
        return 0.0, 0.0
    return int(ran) / 1e9, int(waited) / 1e9


def postgres_pids(server: Any) -> list[int]:
    """The postmaster of a :class:`tests.servers.PostgresServer` and its children."""
    with open(os.path.join(server.data, "postmaster.pid")) as handle:
        return descendants(int(handle.readline()))


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def remote_twilio(count: int, *, latency: float = 0.0, cpus: str | None = None) -> Iterator[Any]:
    """FakeTwilio in a process of its own (``bench.fake_server``) with ``count`` seeded
    message SIDs; yields its base URL, credentials, SIDs (and a file of them) and pid."""
    process = subprocess.Popen(
        [*taskset(cpus), sys.executable, "-m", "bench.fake_server", str(latency), str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        info = json.loads(process.stdout.readline())
        with tempfile.NamedTemporaryFile("w", suffix=".sids", delete=False) as handle:
            handle.write("\n".join(info["sids"]))
        yield SimpleNamespace(**info, pid=process.pid, sids_file=handle.name)
    finally:
        if process.stdin:
            process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        if process.stdout:
            process.stdout.close()


def baseline_env(ref: str) -> dict[str, str]:
    """Environment for a server subprocess that imports ``twilio_feedback`` as it is at git
    ``ref`` (exported to a temporary directory, ahead of the editable install on the path),
    with the same ``bench`` app: the "before" of a before/after run side by side."""
    root = Path(__file__).resolve().parent.parent
    out = Path(tempfile.mkdtemp(prefix="bench-baseline-"))
    archive = subprocess.run(
        ["git", "archive", ref, "src/twilio_feedback"], cwd=root, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive.stdout, check=True)
    return {"PYTHONPATH": str(out / "src")}


class AppServer:
    """``bench.inside_app`` under uvicorn in a subprocess, on ``cpus`` if given, with the
    HTTP parser and event loop of ``stack`` (:data:`PURE_PYTHON` unless told: uvicorn's
    default would change with what is installed)."""

    def __init__(
        self,
        twilio: Any,
        store: str,
        secret_key: str,
        *,
        workers: int = 1,
        cpus: str | None = None,
        timing: bool = False,
        extra_env: dict[str, str] | None = None,
        stack: Sequence[str] = PURE_PYTHON,
    ) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "BENCH_STORE": store,
            "BENCH_TWILIO_URL": twilio.base_url,
            "BENCH_ACCOUNT_SID": twilio.account_sid,
            "BENCH_AUTH_TOKEN": twilio.auth_token,
            "BENCH_SECRET_KEY": secret_key,
            "BENCH_SIDS_FILE": twilio.sids_file,
            "PYTHONWARNINGS": "ignore",
            **({"BENCH_TIMING": "1"} if timing else {}),
            **(extra_env or {}),
        }
        self.workers = workers
        self.process = subprocess.Popen(
            [
                *taskset(cpus),
                sys.executable,
                "-m",
                "uvicorn",
                "bench.inside_app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(workers),
                "--log-level",
                "warning",
                "--no-access-log",
                *stack,
            ],
            env=env,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                self.get("/_stats")
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("the benchmark app did not start") from None
                time.sleep(0.1)
        if workers > 1:  # every worker up
            while len(self.pids()) < workers + 1 and time.monotonic() < deadline:
                time.sleep(0.1)

    def request(self, path: str) -> bytes:
        """GET ``path``; the body."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            conn.request("GET", path, headers={"User-Agent": "bench"})
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"{path}: {response.status} {body[:200]!r}")
            return body
        finally:
            conn.close()

    def get(self, path: str) -> Any:
        """GET ``path``; its JSON."""
        return json.loads(self.request(path))

    def pids(self) -> list[int]:
        """The uvicorn process and its workers (and the workers' own children)."""
        return descendants(self.process.pid)

    def worker_pids(self) -> list[int]:
        """The processes that serve requests."""
        pids = self.pids()
        return pids if self.workers == 1 else [p for p in pids if p != self.process.pid]

    def stop(self) -> None:
        """Terminate (uvicorn shuts down gracefully: the tracker flushes)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
