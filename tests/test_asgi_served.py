"""The ASGI middleware under a real uvicorn server, mounted below a root path: with
``uvicorn --root-path`` and with Starlette's ``Mount``, confirm paths are relative to the app,
and the documented handler (``request.state.twilio_feedback``) gets its result."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from twilio_feedback.testing import FakeTwilio

from .conftest import CHROME, SECRET_KEY
from .servers import free_port, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[1]
STYLES = {
    # name: (uvicorn arguments, the prefix a client's request carries)
    "root-path": (["tests.served_asgi:app", "--root-path", "/app"], ""),
    "mount": (["tests.served_asgi:mounted"], "/app"),
}


@dataclass
class Served:
    url: str
    prefix: str
    fake: FakeTwilio
    http: httpx.Client


def _answers(url: str, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"uvicorn exited ({process.returncode})")
    try:
        return httpx.get(url, timeout=1, trust_env=False).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module", params=sorted(STYLES))
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    arguments, prefix = STYLES[request.param]
    log = tmp_path_factory.mktemp(request.param) / "uvicorn.log"
    with FakeTwilio() as fake:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TWILIO_")}
        env.update(
            TWILIO_ACCOUNT_SID=fake.account_sid,
            TWILIO_AUTH_TOKEN=fake.auth_token,
            TWILIO_FEEDBACK_SECRET_KEY=SECRET_KEY,
            TWILIO_FEEDBACK_API_BASE_URL=fake.base_url,
        )
        port = free_port()
        command = [sys.executable, "-m", "uvicorn", *arguments, "--app-dir", str(ROOT)]
        command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        with log.open("wb") as out:
            process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: _answers(url + "/", process), 30, f"uvicorn ({log.read_text()})")
            with httpx.Client(timeout=10, trust_env=False, headers={"User-Agent": CHROME}) as http:
                yield Served(url, prefix, fake, http)
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def test_confirms_below_a_root_path(served: Served) -> None:
    response = served.http.post(f"{served.url}{served.prefix}/send", json={"to": "+15558675310"})
    assert response.status_code == 200, response.text
    sid = response.json()["message_sid"]
    link = next(m.body for m in served.fake.messages if m.sid == sid).rsplit(" ", 1)[-1]
    parts = urlsplit(link)
    assert parts.path == "/app/confirm"  # the app's own links carry the root path
    confirm = f"{served.url}{served.prefix}/confirm?{parts.query}"
    first = served.http.get(confirm)
    assert first.status_code == 200, first.text
    assert first.json() == {"status": "confirmed", "message_sid": sid}
    assert served.http.get(confirm).json()["status"] == "duplicate"
    assert served.fake.wait_for(
        lambda: [p.message_sid for p in served.fake.feedback] == [sid], timeout=10
    )
