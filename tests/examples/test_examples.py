"""Every example app, served by a real server on 127.0.0.1 (uvicorn for ASGI, gunicorn for
WSGI), against FakeTwilio: the link confirms once, is reported once, and nothing else does.

One server per example for the whole module. The ASGI servers keep the memory store; the
gunicorn ones run two workers on one SQLite file, so a duplicate may land on the other
worker and must still be recognised.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from twilio_feedback.testing import FakeTwilio
from twilio_feedback.tokens import TokenSigner

from ..conftest import SECRET_KEY
from ..servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DJANGO = EXAMPLES / "django_project"
PHONE = "+15558675310"
SENDER = "+15017122661"
PHONE_BROWSER = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
PREVIEWS = {
    "iMessage": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_1) AppleWebKit/601.2.4 (KHTML, "
    "like Gecko) Version/9.0.1 Safari/601.2.4 facebookexternalhit/1.1 Facebot Twitterbot/1.0",
    "WhatsApp": "WhatsApp/2.23.20.0 A",
    "Slack": "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "Telegram": "TelegramBot (like TwitterBot)",
    "X": "Twitterbot/1.0",
    "LinkedIn": "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient "
    "+http://www.linkedin.com)",
    "Discord": "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
    "Skype": "Mozilla/5.0 (Windows NT 6.1; WOW64) SkypeUriPreview Preview/0.5 "
    "skype-url-preview@microsoft.com",
    "Teams": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/51.0.2704.79 Safari/537.36 Edge/14.14393 MicrosoftPreview/2.0 "
    "+https://aka.ms/MicrosoftPreview",
    "Google": "Mozilla/5.0 (Linux; Android 11) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/99.0 Mobile Safari/537.36 Google-PageRenderer Google "
    "(+https://developers.google.com/+/web/snippet/)",
    "Googlebot": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
}


def _uvicorn(app_dir: Path, target: str) -> Callable[[int], list[str]]:
    return lambda port: [
        *(sys.executable, "-m", "uvicorn", target, "--app-dir", str(app_dir)),
        *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
    ]


def _gunicorn(app_dir: Path, target: str) -> Callable[[int], list[str]]:
    return lambda port: [
        *(sys.executable, "-m", "gunicorn", target, "--chdir", str(app_dir)),
        *("--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "4"),
        *("--log-level", "warning", "--graceful-timeout", "5"),
    ]


SERVERS = {
    "fastapi-uvicorn": (_uvicorn(EXAMPLES, "fastapi_app:app"), "memory://"),
    "starlette-uvicorn": (_uvicorn(EXAMPLES, "starlette_app:app"), "memory://"),
    "flask-gunicorn": (_gunicorn(EXAMPLES, "flask_app:app"), "sqlite"),
    "django-gunicorn": (_gunicorn(DJANGO, "mysite.wsgi:application"), "sqlite"),
    "django-uvicorn": (_uvicorn(DJANGO, "mysite.asgi:application"), "memory://"),
}


@dataclass
class Served:
    """An example app running under its server, and the emulator it talks to."""

    name: str
    url: str
    fake: FakeTwilio
    http: httpx.Client

    def send(self) -> tuple[str, str]:
        """Have the app text a sign-in link; return the message SID and the link."""
        response = self.http.post(f"{self.url}/send", json={"to": PHONE})
        assert response.status_code == 200, response.text
        sid = response.json()["message_sid"]
        body = next(m.body for m in self.fake.messages if m.sid == sid)
        return sid, body.rsplit(" ", 1)[-1]

    def visit(self, link: str, agent: str = PHONE_BROWSER, method: str = "GET") -> httpx.Response:
        response = self.http.request(method, link, headers={"User-Agent": agent})
        assert response.status_code == 200, (method, agent, response.text)
        return response

    def status(self, link: str, agent: str = PHONE_BROWSER) -> str:
        data = self.visit(link, agent).json()
        return str(data["status"])

    def posts(self, sid: str) -> int:
        return sum(1 for post in self.fake.feedback if post.message_sid == sid)


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited ({process.returncode}):\n{log.read_text()}")
        try:
            if httpx.get(url, timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # polling for readiness, against a deadline
    pytest.fail(f"the server did not answer within 30 s:\n{log.read_text()}")


@pytest.fixture(scope="module", params=sorted(SERVERS))
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    name = request.param
    command, store = SERVERS[name]
    if (
        name.endswith("gunicorn")
        and shutil.which("gunicorn", path=str(Path(sys.executable).parent)) is None
    ):
        pytest.skip("gunicorn is not installed")
    tmp = tmp_path_factory.mktemp(name)
    if store == "sqlite":
        pytest.importorskip("sqlalchemy")
        store = f"sqlite:///{tmp / 'feedback.db'}"
    with FakeTwilio() as fake:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "DJANGO_"))}
        env.update(
            TWILIO_ACCOUNT_SID=fake.account_sid,
            TWILIO_AUTH_TOKEN=fake.auth_token,
            TWILIO_PHONE_NUMBER=SENDER,
            TWILIO_FEEDBACK_SECRET_KEY=SECRET_KEY,
            TWILIO_FEEDBACK_STORE=store,
            TWILIO_FEEDBACK_API_BASE_URL=fake.base_url,
            PYTHONUNBUFFERED="1",
        )
        port = free_port()
        log = tmp / "server.log"
        with log.open("wb") as out:
            process = subprocess.Popen(command(port), env=env, stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(process, url + "/", log)
            # A fresh connection per request: a pooled one may be closed by the server's
            # keep-alive timeout (gunicorn's is 2 s) just as the client reuses it.
            no_pool = httpx.Limits(max_keepalive_connections=0)
            with httpx.Client(timeout=10, trust_env=False, limits=no_pool) as http:
                yield Served(name, url, fake, http)
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def test_link_confirms_once_and_is_reported_once(served: Served) -> None:
    sid, link = served.send()
    assert next(m for m in served.fake.messages if m.sid == sid).provide_feedback

    assert served.visit(link, method="HEAD").content == b""
    for name, agent in PREVIEWS.items():
        assert served.status(link, agent) == "ignored", name
    assert served.posts(sid) == 0

    first = served.visit(link).json()
    assert first == {"status": "confirmed", "message_sid": sid}
    assert served.fake.wait_for(lambda: served.posts(sid) == 1, timeout=10)
    assert served.status(link) == "duplicate"
    assert served.status(link, PREVIEWS["WhatsApp"]) == "ignored"

    # A later message's report has gone through: no second report of the first one followed.
    later, later_link = served.send()
    assert served.status(later_link) == "confirmed"
    assert served.fake.wait_for(lambda: served.posts(later) == 1, timeout=10)
    assert served.posts(sid) == 1
    assert {p.outcome for p in served.fake.feedback} == {"confirmed"}


def test_bad_tokens_reach_the_app_and_confirm_nothing(served: Served) -> None:
    sid, link = served.send()
    base, token = link.split("?id=")
    tampered = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    expired = TokenSigner(SECRET_KEY, timer=lambda: time.time() - 30 * 86400).issue()[1]
    forged = secrets.token_urlsafe(24)
    cases = {
        f"{base}?id={tampered}": "invalid",
        f"{base}?id={forged}": "invalid",
        f"{base}?id={expired}": "expired",
        f"{base}?id=": "invalid",
        base: "invalid",
        f"{base}?id={'x' * 4000}": "invalid",
        f"{base}?id=%FF%FE%00&id=2": "invalid",
    }
    for url, status in cases.items():
        assert served.status(url) == status, url
    assert served.status(link) == "confirmed"  # the genuine link was not used up
    assert served.fake.wait_for(lambda: served.posts(sid) == 1, timeout=10)


def test_confirm_answers_at_once_while_twilio_takes_two_seconds(served: Served) -> None:
    sid, link = served.send()
    served.fake.latency = 2.0
    try:
        started = time.perf_counter()
        assert served.status(link) == "confirmed"
        elapsed = time.perf_counter() - started
        assert elapsed < 1.0, f"the confirm response took {elapsed:.2f} s"
        assert served.posts(sid) == 0
        assert served.fake.wait_for(lambda: served.posts(sid) == 1, timeout=15)
    finally:
        served.fake.latency = 0.0


def test_other_paths_are_untouched(served: Served) -> None:
    plain = served.http.get(f"{served.url}/", headers={"User-Agent": PHONE_BROWSER})
    with_query = served.http.get(f"{served.url}/?id=abc", headers={"User-Agent": PHONE_BROWSER})
    assert plain.status_code == with_query.status_code == 200
    assert plain.text == with_query.text
    assert "/send" in plain.text
