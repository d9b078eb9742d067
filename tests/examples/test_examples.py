"""Every example app, against FakeTwilio over real HTTP, two ways: under its real server on
127.0.0.1 (uvicorn or hypercorn for ASGI, gunicorn for WSGI), and under its framework's own
test client as the app's tests would drive it (the plugin's settings, test clients counted
as people). Either way the link confirms once, is reported once, and nothing else does.

One server (or test client) per example for the whole module. The ASGI servers keep the
memory store; the gunicorn ones run two workers on one SQLite file, so a duplicate may land
on the other worker and must still be recognised. The Django project keeps its records in
its own database (``django://``), migrated first: PostgreSQL under gunicorn, SQLite under
uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest

from twilio_feedback.testing import FakeTwilio
from twilio_feedback.testing.plugin import TEST_SECRET_KEY, environ_for_tests
from twilio_feedback.tokens import TokenSigner, derive_key

from ..conftest import SECRET_KEY
from ..servers import PostgresServer, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DJANGO = EXAMPLES / "django_project"
PHONE = "+15558675310"
SENDER = "+15017122661"
FLASK_SECRET_KEY = "flask-secret-key-for-the-example-0123456789"
DJANGO_SECRET_KEY = "django-test-secret-key-0123456789-abcdefghijklmnop"
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
T = TypeVar("T")


def _uvicorn(app_dir: Path, target: str, *options: str) -> Callable[[int], list[str]]:
    return lambda port: [
        *(sys.executable, "-m", "uvicorn", target, "--app-dir", str(app_dir), *options),
        *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
    ]


def _gunicorn(app_dir: Path, target: str) -> Callable[[int], list[str]]:
    return lambda port: [
        *(sys.executable, "-m", "gunicorn", target, "--chdir", str(app_dir)),
        *("--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "4"),
        *("--log-level", "warning", "--graceful-timeout", "5"),
    ]


def _hypercorn(target: str) -> Callable[[int], list[str]]:
    return lambda port: [
        *(sys.executable, "-m", "hypercorn", target),
        *("--bind", f"127.0.0.1:{port}", "--log-level", "warning"),
    ]


@dataclass(frozen=True)
class Server:
    """How an example is served: the command, its store, the environment it adds, and the
    signing key its links end up with."""

    command: Callable[[int], list[str]]
    store: str = "memory://"
    env: dict[str, str] = field(default_factory=dict)
    secret_key: str = SECRET_KEY
    module: str | None = None  # the module the server needs (skipped when missing)
    cwd: Path | None = None


SERVERS = {
    "fastapi-uvicorn": Server(_uvicorn(EXAMPLES, "fastapi_app:app")),
    "starlette-uvicorn": Server(_uvicorn(EXAMPLES, "starlette_app:app")),
    "flask-gunicorn": Server(
        _gunicorn(EXAMPLES, "flask_app:create_app()"),
        "sqlite",
        # No TWILIO_FEEDBACK_SECRET_KEY: the links are signed with a key derived from it.
        {"FLASK_SECRET_KEY": FLASK_SECRET_KEY, "TWILIO_FEEDBACK_SECRET_KEY": ""},
        derive_key(FLASK_SECRET_KEY),
    ),
    "litestar-uvicorn": Server(
        _uvicorn(EXAMPLES, "litestar_app:create_app", "--factory"), module="litestar"
    ),
    "quart-hypercorn": Server(_hypercorn("quart_app:create_app()"), module="quart", cwd=EXAMPLES),
    # Configured in settings.py: the signing key derives from Django's SECRET_KEY.
    "django-gunicorn": Server(
        _gunicorn(DJANGO, "mysite.wsgi"),
        "django-postgres",
        {"DJANGO_SECRET_KEY": DJANGO_SECRET_KEY, "TWILIO_FEEDBACK_SECRET_KEY": ""},
        derive_key(DJANGO_SECRET_KEY),
        module="django",
    ),
    "django-uvicorn": Server(
        _uvicorn(DJANGO, "mysite.asgi:application"),
        "django-sqlite",
        {"DJANGO_SECRET_KEY": DJANGO_SECRET_KEY, "TWILIO_FEEDBACK_SECRET_KEY": ""},
        derive_key(DJANGO_SECRET_KEY),
        module="django",
    ),
}
TEST_CLIENTS = ("fastapi", "starlette", "flask", "litestar", "quart")


def django_environment(tmp: Path, store: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """The example project's database: a SQLite file, or a fresh PostgreSQL database."""
    if store == "django-sqlite":
        return {"DJANGO_SQLITE_PATH": str(tmp / "db.sqlite3")}
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = urlsplit(server.fresh_database())
    return {
        "POSTGRES_DB": url.path.lstrip("/"),
        "POSTGRES_USER": url.username or "",
        "POSTGRES_HOST": url.hostname or "",
        "POSTGRES_PORT": str(url.port),
    }


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python manage.py ARGS`` in the example project."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=DJANGO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@dataclass
class Answer:
    """A response, whoever answered it."""

    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class App:
    """An example app and the emulator it talks to, driven by a client; ``agent=None``
    stands for a person: a phone's browser, or the test client itself (counted)."""

    def __init__(self, name: str, fake: FakeTwilio, secret_key: str) -> None:
        self.name = name
        self.fake = fake
        self.secret_key = secret_key

    def request(
        self, method: str, target: str, agent: str | None = None, payload: Any = None
    ) -> Answer:
        raise NotImplementedError

    def send(self) -> tuple[str, str]:
        """Have the app text a sign-in link; return the message SID and the link."""
        response = self.request("POST", "/send", payload={"to": PHONE})
        assert response.status == 200, response.body
        sid = response.json()["message_sid"]
        assert self.fake.messages[-1].sid == sid
        return sid, self.fake.last_link(to=PHONE)

    def visit(self, link: str, agent: str | None = None, method: str = "GET") -> Answer:
        response = self.request(method, link, agent)
        assert response.status == 200, (method, agent, response.body)
        return response

    def status(self, link: str, agent: str | None = None) -> str:
        return str(self.visit(link, agent).json()["status"])

    def posts(self, sid: str) -> int:
        return sum(1 for post in self.fake.feedback if post.message_sid == sid)


class Served(App):
    """An example app running under its server."""

    def __init__(
        self, name: str, fake: FakeTwilio, secret_key: str, url: str, http: httpx.Client
    ) -> None:
        super().__init__(name, fake, secret_key)
        self.url = url
        self.http = http

    def request(
        self, method: str, target: str, agent: str | None = None, payload: Any = None
    ) -> Answer:
        url = target if "://" in target else self.url + target
        headers = {"User-Agent": agent or PHONE_BROWSER}
        response = self.http.request(method, url, headers=headers, json=payload)
        return Answer(response.status_code, response.content)


class HttpxTestClient(App):
    """Starlette's and Litestar's TestClient (httpx clients on the app)."""

    def __init__(self, name: str, fake: FakeTwilio, client: Any) -> None:
        super().__init__(name, fake, TEST_SECRET_KEY)
        self.client = client

    def request(
        self, method: str, target: str, agent: str | None = None, payload: Any = None
    ) -> Answer:
        headers = {"User-Agent": agent} if agent else {}
        response = self.client.request(method, target, headers=headers, json=payload)
        return Answer(response.status_code, response.content)


class FlaskTestClient(App):
    def __init__(self, name: str, fake: FakeTwilio, client: Any) -> None:
        super().__init__(name, fake, TEST_SECRET_KEY)
        self.client = client

    def request(
        self, method: str, target: str, agent: str | None = None, payload: Any = None
    ) -> Answer:
        headers = {"User-Agent": agent} if agent else {}
        response = self.client.open(target, method=method, headers=headers, json=payload)
        return Answer(response.status_code, response.data)


class QuartTestClient(App):
    """Quart's async test client, driven from the tests through an event loop thread."""

    def __init__(self, name: str, fake: FakeTwilio, client: Any, run: Any) -> None:
        super().__init__(name, fake, TEST_SECRET_KEY)
        self.client = client
        self.run = run

    def request(
        self, method: str, target: str, agent: str | None = None, payload: Any = None
    ) -> Answer:
        headers = {"User-Agent": agent} if agent else {}
        path = _path(target)  # Quart's client takes a path

        async def call() -> Answer:
            response = await self.client.open(path, method=method, headers=headers, json=payload)
            return Answer(response.status_code, await response.get_data())

        return self.run(call())


def _path(target: str) -> str:
    parts = urlsplit(target)
    return parts.path + (f"?{parts.query}" if parts.query else "")


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


def _serve(
    name: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[App]:
    server = SERVERS[name]
    if server.module is not None:
        pytest.importorskip(server.module)
    if (
        "gunicorn" in name
        and shutil.which("gunicorn", path=str(Path(sys.executable).parent)) is None
    ):
        pytest.skip("gunicorn is not installed")
    tmp = tmp_path_factory.mktemp(name)
    store = server.store
    if store == "sqlite":
        pytest.importorskip("sqlalchemy")
        store = f"sqlite:///{tmp / 'feedback.db'}"
    with FakeTwilio() as fake:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "DJANGO_"))}
        env.update(
            fake.environ(),
            TWILIO_PHONE_NUMBER=SENDER,
            TWILIO_FEEDBACK_SECRET_KEY=SECRET_KEY,
            TWILIO_FEEDBACK_STORE=store,
            PYTHONUNBUFFERED="1",
        )
        env.update(server.env)
        if store.startswith("django"):
            env.update(django_environment(tmp, store, request))
            del env["TWILIO_FEEDBACK_STORE"]  # settings.py says django://
        env = {k: v for k, v in env.items() if v}
        if store.startswith("django"):
            migrated = manage("migrate", env=env)
            assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        port = free_port()
        log = tmp / "server.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                server.command(port), env=env, stdout=out, stderr=subprocess.STDOUT, cwd=server.cwd
            )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(process, url + "/", log)
            # A fresh connection per request: a pooled one may be closed by the server's
            # keep-alive timeout (gunicorn's is 2 s) just as the client reuses it.
            no_pool = httpx.Limits(max_keepalive_connections=0)
            with httpx.Client(timeout=10, trust_env=False, limits=no_pool) as http:
                yield Served(name, fake, server.secret_key, url, http)
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def _example(name: str) -> ModuleType:
    """``examples/<name>_app.py``, imported as the app's own tests would."""
    spec = importlib.util.spec_from_file_location(f"{name}_app", EXAMPLES / f"{name}_app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _test_client(name: str) -> Iterator[App]:
    """The example under its framework's test client, configured as the plugin's
    ``twilio_feedback_env`` fixture configures an app's tests."""
    if name in ("litestar", "quart"):
        pytest.importorskip(name)
    with FakeTwilio() as fake, pytest.MonkeyPatch.context() as env:
        for key, value in {**environ_for_tests(fake), "TWILIO_PHONE_NUMBER": SENDER}.items():
            env.setenv(key, value)
        for key in ("TWILIO_API_KEY", "TWILIO_API_SECRET"):
            env.delenv(key, raising=False)
        example = _example(name)
        if name in ("fastapi", "starlette"):
            from starlette.testclient import TestClient

            with TestClient(example.app) as client:
                yield HttpxTestClient(name, fake, client)
        elif name == "litestar":
            from litestar.testing import TestClient as LitestarTestClient

            with LitestarTestClient(example.create_app()) as client:
                yield HttpxTestClient(name, fake, client)
        elif name == "flask":
            app = example.create_app()
            try:
                yield FlaskTestClient(name, fake, app.test_client())
            finally:
                app.extensions["twilio_feedback"].close()
        else:
            with _event_loop() as run:
                test_app = example.create_app().test_app()
                run(test_app.__aenter__())
                try:
                    yield QuartTestClient(name, fake, test_app.test_client(), run)
                finally:
                    run(test_app.__aexit__(None, None, None))


@contextlib.contextmanager
def _event_loop() -> Iterator[Callable[[Coroutine[Any, Any, T]], T]]:
    """An event loop in a thread of its own, and a function that runs a coroutine on it."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="example-loop", daemon=True)
    thread.start()

    def run(coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(30)

    try:
        yield run
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(
    scope="module", params=[*sorted(SERVERS), *(f"{name}-testclient" for name in TEST_CLIENTS)]
)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[App]:
    name: str = request.param
    if name.endswith("-testclient"):
        yield from _test_client(name.removesuffix("-testclient"))
    else:
        yield from _serve(name, tmp_path_factory, request)


def test_link_confirms_once_and_is_reported_once(served: App) -> None:
    sid, link = served.send()
    assert next(m for m in served.fake.messages if m.sid == sid).provide_feedback

    head = served.visit(link, method="HEAD")
    if isinstance(served, Served):
        assert head.body == b""
    elif head.body:  # a test client may leave the body of a HEAD answer in
        assert head.json()["status"] == "ignored"
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


def test_bad_tokens_reach_the_app_and_confirm_nothing(served: App) -> None:
    sid, link = served.send()
    base, token = link.split("?id=")
    tampered = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    expired = TokenSigner(served.secret_key, timer=lambda: time.time() - 30 * 86400).issue()[1]
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


def test_confirm_answers_at_once_while_twilio_takes_two_seconds(served: App) -> None:
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


def test_other_paths_are_untouched(served: App) -> None:
    plain = served.request("GET", "/")
    with_query = served.request("GET", "/?id=abc")
    assert plain.status == with_query.status == 200
    assert plain.body == with_query.body
    assert b"/send" in plain.body


def test_importing_the_examples_starts_nothing(tmp_path: Path) -> None:
    """No settings in the environment, and still every example imports: nothing reads them,
    opens a store or starts a thread before the server starts the app."""
    script = (
        "import sys, threading\n"
        f"sys.path.insert(0, {str(EXAMPLES)!r})\n"
        "import fastapi_app, starlette_app, flask_app, litestar_app, quart_app\n"
        "names = [t.name for t in threading.enumerate() if t.name.startswith('twilio')]\n"
        "print(names)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWILIO_")}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
