"""FakeTwilio in a process of its own, so a benchmark measures the library and not the
emulator sharing its interpreter: ``python -m bench.fake_server LATENCY COUNT`` prints the
base URL, credentials and COUNT seeded message SIDs as JSON, then serves until its
standard input closes.

Each line written to its standard input is a JSON command, answered with one JSON line
(:class:`RemoteTwilio` speaks it): ``{"latency": 0.05}``, ``{"fail_always": FAULT}``,
``{"fail_next": [FAULT, ...]}``, ``{"clear": true}`` (faults), ``{"feedback": true}``
(accepted feedback posts per message SID, the time of each SID's first, and feedback
requests per answer status). A
FAULT is ``{"status": 503}``, ``{"status": 429, "retry_after": 1}``, ``{"delay": 3}``
or ``{"drop": true}``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter
from typing import Any

from twilio_feedback.testing import FakeTwilio
from twilio_feedback.testing.fake_twilio import Delay, Drop, Fault, Status


def _fault(spec: dict[str, Any]) -> Fault:
    if "delay" in spec:
        return Delay(float(spec["delay"]))
    if spec.get("drop"):
        return Drop()
    return Status(int(spec["status"]), retry_after=spec.get("retry_after"))


def _command(fake: FakeTwilio, command: dict[str, Any]) -> dict[str, Any]:
    if "latency" in command:
        fake.latency = float(command["latency"])
    if "fail_always" in command:
        fake.fail_always(_fault(command["fail_always"]))
    if "fail_next" in command:
        fake.fail_next(*(_fault(spec) for spec in command["fail_next"]))
    if command.get("clear"):
        fake.clear_faults()
    if command.get("feedback"):
        feedback = fake.feedback
        posts = Counter(post.message_sid for post in feedback)
        first: dict[str, float] = {}
        for post in feedback:
            first.setdefault(post.message_sid, post.time)
        answers = Counter(
            "none" if r.status is None else str(r.status)
            for r in fake.requests
            if r.path.endswith("/Feedback.json")
        )
        return {"feedback": dict(posts), "first": first, "answers": dict(answers)}
    return {"ok": True}


def main() -> None:
    latency, count = float(sys.argv[1]), int(sys.argv[2])
    with FakeTwilio() as fake:
        sids = fake.add_messages(count)
        fake.latency = latency
        print(
            json.dumps(
                {
                    "base_url": fake.base_url,
                    "account_sid": fake.account_sid,
                    "auth_token": fake.auth_token,
                    "sids": sids,
                }
            ),
            flush=True,
        )
        for line in sys.stdin:
            if line.strip():
                print(json.dumps(_command(fake, json.loads(line))), flush=True)


class RemoteTwilio:
    """Starts ``python -m bench.fake_server`` and drives it: ``base_url``,
    ``account_sid`` and ``auth_token`` as on :class:`FakeTwilio`, faults by command."""

    def __init__(self, latency: float = 0.0, count: int = 0, cwd: str | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.fake_server", str(latency), str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=cwd,
        )
        self._lock = threading.Lock()
        assert self.process.stdout is not None
        info = json.loads(self.process.stdout.readline())
        self.base_url: str = info["base_url"]
        self.account_sid: str = info["account_sid"]
        self.auth_token: str = info["auth_token"]
        self.sids: list[str] = info["sids"]

    def command(self, **command: Any) -> dict[str, Any]:
        """Send one command; return the emulator's answer."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        with self._lock:
            self.process.stdin.write(json.dumps(command) + "\n")
            self.process.stdin.flush()
            answer: dict[str, Any] = json.loads(self.process.stdout.readline())
        return answer

    def close(self) -> None:
        """Stop the emulator's process."""
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        if self.process.stdout:
            self.process.stdout.close()


if __name__ == "__main__":
    main()
