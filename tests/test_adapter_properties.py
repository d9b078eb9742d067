"""Property-based tests of both adapters, in process: random paths, methods, queries, forms,
headers (user agents included) and body chunkings, some cut short by a client that leaves.

Every request goes through the ASGI middleware (hand-made scope, receive and send) and then,
the same request, through the WSGI middleware (a made environ). Neither ever raises, the app
always runs and reads the body as it came, and a message is confirmed exactly when the token
rule says so: the genuine token is the first non-empty value of the token parameter in the
query, else in an urlencoded POST form, on a confirm path, in a person's visit. Then the
first adapter says ``confirmed`` and the second ``duplicate``; otherwise nothing is confirmed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote
from wsgiref.validate import validator

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from twilio_feedback import FeedbackTracker, Settings
from twilio_feedback.asgi import FeedbackMiddleware as ASGIMiddleware
from twilio_feedback.bots import BotMatcher
from twilio_feedback.confirm import MAX_FIELDS, MAX_FORM_BYTES
from twilio_feedback.records import State
from twilio_feedback.stores.memory import MemoryStore
from twilio_feedback.testing import FakeTwilio
from twilio_feedback.wsgi import ENVIRON_KEY
from twilio_feedback.wsgi import FeedbackMiddleware as WSGIMiddleware

from .conftest import CHROME, SECRET_KEY

FORM = "application/x-www-form-urlencoded"
CONFIRM_PATHS = ("/confirm", "/bestätigen")
TOKEN = "\x00token\x00"  # placeholder for the genuine token, replaced per example
EXACT_LENGTH = "<length of the body>"  # placeholder for the body's exact length
BROWSERS = [
    CHROME,
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
]
PREVIEWS = ["WhatsApp/2.23.20.0 A", "Twitterbot/1.0", "curl/8.4.0", ""]
PROPERTIES = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class ClientGone(Exception):
    """What a server raises from ``receive()`` or ``wsgi.input.read()`` for a client that
    left."""


@dataclass
class Request:
    """One request, as both protocols would carry it."""

    method: str
    path: str
    root_path: str
    query: str  # latin-1 text: the raw query bytes, one character a byte
    agent: str | None
    content_type: str | None
    content_length: str | None
    body: bytes
    cuts: list[int]  # where the body is split into chunks; repeated cuts make empty chunks
    gone: str | None  # None, "disconnect" or "raise": how a client leaving mid-body shows
    extra: list[tuple[str, str]]  # other headers

    def with_token(self, token: str) -> Request:
        body = self.body.replace(TOKEN.encode("latin-1"), token.encode())
        length = self.content_length
        return dataclasses.replace(
            self,
            query=self.query.replace(TOKEN, token),
            body=body,
            content_length=str(len(body)) if length == EXACT_LENGTH else length,
        )

    @property
    def chunks(self) -> list[bytes]:
        """The body as it arrives (b"" chunks are empty ASGI messages)."""
        bounds = [0, *sorted(min(cut, len(self.body)) for cut in self.cuts), len(self.body)]
        return [self.body[a:b] for a, b in itertools.pairwise(bounds)]

    @property
    def declared(self) -> int | None:
        text = (self.content_length or "").strip()
        if not (text.isascii() and text.isdigit()):
            return None
        digits = text.lstrip("0") or "0"
        return int(digits) if len(digits) < 100 else 10**100

    @property
    def relative_path(self) -> str:
        """The path below the root path (Starlette's rule; WSGI's ``PATH_INFO``)."""
        root = self.root_path
        if root and self.path.startswith(root + "/"):
            return self.path[len(root) :]
        return "" if root and self.path == root else self.path


# -- the rule, written out independently of the code under test ------------------------


def transported(request: Request) -> list[bytes]:
    """The body chunks a server hands on: never more than the declared length."""
    declared = request.declared
    if declared is None:
        return request.chunks
    chunks, room = [], declared
    for chunk in request.chunks:
        chunks.append(chunk[:room])
        room -= len(chunks[-1])
    return chunks


def first_value(text: str) -> str | None:
    """The first non-empty value of ``id`` in an urlencoded text."""
    if text.count("&") >= MAX_FIELDS:
        return None
    return next((v for k, v in parse_qsl(text, keep_blank_values=True) if k == "id" and v), None)


def expected_token(request: Request) -> str | None:
    token = first_value(request.query)
    if token is not None or request.method != "POST":
        return token
    content_type = (request.content_type or "").partition(";")[0].strip().lower()
    declared = request.declared
    if content_type != FORM or declared is None or not 0 < declared <= MAX_FORM_BYTES:
        return None
    body = b"".join(transported(request))
    if request.gone and len(body) < declared:
        return None  # the client left before the end of the body
    return first_value(body.decode("utf-8", "replace"))


def is_visit(request: Request) -> bool:
    """GET or POST from a person (bots are the bot matcher's to tell, tested elsewhere)."""
    return request.method in ("GET", "POST") and not BotMatcher.default().is_bot(request.agent)


# -- strategies --------------------------------------------------------------------------

latin1 = st.characters(max_codepoint=255)
unicode = st.characters(blacklist_categories=("Cs",))


def mostly(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> Any:
    """``common`` about five times in six, else ``rare``."""
    return st.integers(0, 5).flatmap(lambda n: rare if n == 0 else common)


@st.composite
def urlencoded(draw: st.DrawFn) -> str:
    """A query or form text: random pieces, some of them carrying the (placeholder) token
    in the places that count and those that do not."""
    pieces = st.one_of(
        st.just(f"id={TOKEN}"),
        st.just(f"i%64={TOKEN}"),
        st.just("id=" + "".join(f"%{ord(c):02X}" for c in "ABC")),
        st.sampled_from(["id=", "id", "id=forged", "ID=x", "xid=1", "id=%", "&", "=", "a=1"]),
        st.just(f"id={TOKEN}x"),
        st.just(f"id=+{TOKEN}"),
        st.text(latin1, max_size=12),
    )
    drawn = draw(st.lists(pieces, max_size=5))
    if draw(st.booleans()):  # the genuine token somewhere, maybe behind others
        drawn.insert(draw(st.integers(0, len(drawn))), f"id={TOKEN}")
    return "&".join(drawn)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    method = draw(
        mostly(
            st.sampled_from(["GET", "POST"]),
            st.sampled_from(["HEAD", "OPTIONS", "PUT", "post"])
            | st.text(st.characters(min_codepoint=65, max_codepoint=90), min_size=1, max_size=7),
        )
    )
    path = draw(
        mostly(
            st.sampled_from(CONFIRM_PATHS),
            st.sampled_from(["/confirm/", "/Confirm", "/best\ufffdtigen", "/", ""])
            | st.text(unicode, max_size=12).map(lambda text: "/" + text),
        )
    )
    root_path, path = draw(st.sampled_from([("", path), ("/app", "/app" + path), ("/app", path)]))
    agent = draw(
        mostly(st.sampled_from(BROWSERS), st.sampled_from([*PREVIEWS, None]) | st.text(latin1))
    )
    query = draw(st.one_of(st.sampled_from(["", "a=1", "id=", "id"]), urlencoded()))
    body = draw(mostly(urlencoded().map(lambda text: text.encode("latin-1")), st.binary()))
    content_type = draw(
        mostly(
            st.sampled_from([FORM, f"{FORM}; charset=utf-8", FORM.upper()]),
            st.sampled_from(["application/json", "multipart/form-data"])
            | st.none()
            | st.text(latin1, max_size=10),
        )
    )
    content_length = draw(
        mostly(
            st.just(EXACT_LENGTH),
            st.sampled_from(["", "0", "-1", "abc", str(MAX_FORM_BYTES + 1), "9" * 5000])
            | st.none()
            | st.integers(0, 200).map(str),
        )
    )
    return Request(
        method,
        path,
        root_path,
        query,
        agent,
        content_type,
        content_length,
        body,
        draw(st.lists(st.integers(0, len(body) + 40), max_size=6)),
        draw(mostly(st.none(), st.sampled_from(["disconnect", "raise"]))),
        draw(
            st.lists(
                st.tuples(
                    st.sampled_from(["accept", "cookie", "referer", "x-forwarded-for", "x-id"]),
                    st.text(latin1, max_size=20),
                ),
                max_size=3,
            )
        ),
    )


# -- driving the adapters ------------------------------------------------------------------


def run_asgi(tracker: FeedbackTracker, loop: asyncio.AbstractEventLoop, request: Request) -> Any:
    incoming: list[dict[str, Any]] = []
    chunks = transported(request)
    # A server knows the body is complete once the declared length has come.
    complete = not request.gone or len(b"".join(chunks)) == request.declared
    for n, chunk in enumerate(chunks):
        last = n == len(chunks) - 1 and complete
        incoming.append({"type": "http.request", "body": chunk, "more_body": not last})
    gone = request.gone

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        if gone == "raise":
            raise ClientGone
        return {"type": "http.disconnect"}

    sent: list[Any] = []
    seen: dict[str, Any] = {}

    async def send(message: Any) -> None:
        sent.append(message)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen["result"] = scope.get("twilio_feedback")
        seen["path"], seen["root_path"] = scope["path"], scope["root_path"]
        body = b""
        while True:
            try:
                message = await receive()
            except ClientGone:
                seen["raised"] = True
                break
            body += message.get("body", b"")
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        seen["body"] = body
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    headers = [(b"host", b"testserver")]
    headers += [(name.encode(), value.encode("latin-1")) for name, value in request.extra]
    if request.agent is not None:
        headers.append((b"user-agent", request.agent.encode("latin-1")))
    if request.content_type is not None:
        headers.append((b"content-type", request.content_type.encode("latin-1")))
    if request.content_length is not None:
        headers.append((b"content-length", request.content_length.encode("latin-1")))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": request.path,
        "raw_path": quote(request.path).encode(),
        "root_path": request.root_path,
        "query_string": request.query.encode("latin-1"),
        "headers": headers,
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1234),
    }
    loop.run_until_complete(ASGIMiddleware(app, tracker)(scope, receive, send))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert (seen["path"], seen["root_path"]) == (request.path, request.root_path)
    assert seen["body"] == b"".join(chunks)
    return seen["result"]


class Input:
    """A ``wsgi.input`` that hands the body out in the request's chunks (short reads), then
    the end of the body, or :class:`ClientGone` for a client that left."""

    def __init__(self, chunks: list[bytes], gone: bool) -> None:
        self.chunks = [chunk for chunk in chunks if chunk]
        self.gone = gone

    def read(self, size: int = -1) -> bytes:
        if not self.chunks:
            if self.gone:
                raise ClientGone
            return b""
        chunk = self.chunks.pop(0)
        if 0 <= size < len(chunk):
            chunk, rest = chunk[:size], chunk[size:]
            self.chunks.insert(0, rest)
        return chunk

    def readline(self, size: int = -1) -> bytes:
        raise AssertionError("not used")

    def readlines(self, hint: int = -1) -> list[bytes]:
        raise AssertionError("not used")

    def __iter__(self) -> Iterator[bytes]:
        raise AssertionError("not used")


def run_wsgi(tracker: FeedbackTracker, request: Request) -> Any:
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen["result"] = environ.get(ENVIRON_KEY)
        seen["path"] = environ["PATH_INFO"]
        declared = request.declared
        try:
            seen["body"] = environ["wsgi.input"].read(declared) if declared else b""
        except ClientGone:
            seen["body"] = None
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    # PEP 3333: the path below SCRIPT_NAME, its UTF-8 bytes one latin-1 character each.
    path_info = request.relative_path.encode("utf-8").decode("latin-1")
    chunks = transported(request)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": request.root_path,
        "PATH_INFO": path_info,
        "QUERY_STRING": request.query,
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "testserver",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": Input(chunks, request.gone is not None),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in request.extra:
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    if request.agent is not None:
        environ["HTTP_USER_AGENT"] = request.agent
    if request.content_type is not None:
        environ["CONTENT_TYPE"] = request.content_type
    if request.content_length is not None:
        environ["CONTENT_LENGTH"] = request.content_length
    middleware: Any = WSGIMiddleware(app, tracker)
    # wsgiref.validate checks both sides where the request is a valid PEP 3333 one.
    declared = request.declared
    valid = (
        request.method in ("GET", "POST", "HEAD", "OPTIONS", "PUT")
        and (request.content_length is None or (declared is not None and declared < 10**9))
        and path_info.startswith("/")
    )
    if valid:
        middleware = validator(WSGIMiddleware(validator(app), tracker))
    started: list[Any] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        started.append(status)
        return lambda data: None

    response = middleware(environ, start_response)
    try:
        assert b"".join(response) == b"ok"
    finally:
        close = getattr(response, "close", None)
        if close:
            close()
    assert started == ["200 OK"]
    assert seen["path"] == path_info
    got = b"".join(chunks)[: request.declared or 0]
    if seen["body"] is not None:
        assert got.startswith(seen["body"])
    return seen["result"]


# -- the properties -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


@pytest.fixture(scope="module")
def tracker(fake: FakeTwilio) -> Iterator[FeedbackTracker]:
    settings = Settings(
        account_sid=fake.account_sid,
        auth_token=fake.auth_token,
        secret_key=SECRET_KEY,
        store=MemoryStore(),
        api_base_url=fake.base_url,
        confirm_paths=CONFIRM_PATHS,
    )
    with FeedbackTracker(settings) as tracker:
        yield tracker


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@PROPERTIES
@given(template=requests())
def test_both_adapters_confirm_exactly_when_the_rule_says_so(
    template: Request,
    tracker: FeedbackTracker,
    fake: FakeTwilio,
    loop: asyncio.AbstractEventLoop,
) -> None:
    ticket = tracker.ticket()
    tracker.bind(ticket, fake.add_messages(1)[0])
    request = template.with_token(ticket.token)
    on_path = request.relative_path in CONFIRM_PATHS
    confirms = on_path and is_visit(request) and expected_token(request) == ticket.token

    event("off the confirm paths" if not on_path else "confirms" if confirms else "refused")
    if confirms and first_value(request.query) is None:
        event("confirms from the form")
    asgi = run_asgi(tracker, loop, request)
    wsgi = run_wsgi(tracker, request)
    record = tracker.store.get(ticket.tracking_id)
    assert record is not None
    if not on_path:
        assert (asgi, wsgi) == (None, None)
        return
    assert asgi is not None, "ASGI: no result on a confirm path"
    assert wsgi is not None, "WSGI: no result on a confirm path"
    if confirms:
        assert (asgi.status, wsgi.status) == ("confirmed", "duplicate")
        assert record.state is not State.PENDING
        assert run_asgi(tracker, loop, request).status == "duplicate"
    else:
        assert not asgi.ok
        assert not wsgi.ok
        assert asgi.status == wsgi.status
        assert record.state is State.PENDING
