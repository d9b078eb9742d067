"""The protocol-free decision for one request: is it a confirmation, and of what?

The ASGI and WSGI adapters feed :class:`ConfirmGate` the request's path, method, query
string, user agent and (for a form POST) body, and act on what it says. Everything both
adapters need lives here, so neither holds logic the other would have to repeat.
"""

from __future__ import annotations

from collections.abc import Container
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote_plus

from .bots import BotMatcher
from .records import ConfirmResult

if TYPE_CHECKING:
    from .tracker import FeedbackTracker

__all__ = ["FORM_CONTENT_TYPE", "MAX_FORM_BYTES", "ConfirmGate"]

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 64 * 1024
"""A POST body larger than this is not read for a token (and passes through untouched)."""
NEVER_CONFIRM = frozenset({"HEAD", "OPTIONS"})

IGNORED_METHOD = ConfirmResult("ignored", reason="method does not confirm")
IGNORED_BOT = ConfirmResult("ignored", reason="link preview or scanner")


class ConfirmGate:
    """What the middleware decides, shared by both adapters.

    ``bots`` replaces the user-agent matcher built from the tracker's settings
    (``bot_user_agents``, ``default_bot_list``).
    """

    def __init__(self, tracker: FeedbackTracker, *, bots: BotMatcher | None = None) -> None:
        s = tracker.settings
        self.tracker = tracker
        self.settings = s
        self.param = s.token_param
        self.methods = frozenset(s.confirm_methods) - NEVER_CONFIRM
        self.bots = bots or BotMatcher.default(s.bot_user_agents, maintained=s.default_bot_list)
        self._exact = frozenset(s.confirm_paths)
        self._prefixes = tuple(s.confirm_paths) if s.path_match == "prefix" else None

    def matches(self, path: str | None) -> bool:
        """Whether ``path`` is a confirm path."""
        return path in self.paths

    @property
    def paths(self) -> Container[str | None]:
        """The confirm paths, for ``path in gate.paths``: the exact paths' frozenset itself
        (one C-level membership test, the only work a request on any other path sees),
        or a prefix matcher when ``path_match="prefix"``."""
        if self._prefixes is None:
            return self._exact
        return _Prefixes(self._prefixes)

    def screen(self, method: str, user_agent: str) -> ConfirmResult | None:
        """An ``ignored`` result for visits that must not confirm, else ``None``.

        Checked before the token, so a preview bot never costs a store lookup.
        """
        if method not in self.methods:
            return IGNORED_METHOD
        if self.bots.is_bot(user_agent):
            return IGNORED_BOT
        return None

    def wants_body(self, method: str, content_type: str, content_length: int | None) -> bool:
        """Whether to read a POST body for the token (a small urlencoded form only)."""
        return (
            method == "POST"
            and content_type.split(";", 1)[0].strip().lower() == FORM_CONTENT_TYPE
            and content_length is not None
            and 0 < content_length <= MAX_FORM_BYTES
        )

    def token_from_query(self, query: str) -> str | None:
        """The first value of the token parameter in a raw query string."""
        for piece in query.split("&"):
            name, _, value = piece.partition("=")
            if name == self.param or (name and unquote_plus(name) == self.param):
                return unquote_plus(value)
        return None

    def token_from_form(self, body: bytes) -> str | None:
        """The token field of an urlencoded form body."""
        try:
            text = body.decode("ascii")
        except UnicodeDecodeError:
            text = body.decode("utf-8", "replace")
        for name, value in parse_qsl(text, keep_blank_values=True):
            if name == self.param:
                return value
        return None

    def confirm(self, token: str | None) -> ConfirmResult:
        """Confirm the token (sync; for WSGI)."""
        return self.tracker.confirm_token(token)

    async def confirm_async(self, token: str | None) -> ConfirmResult:
        """Confirm the token without blocking the event loop (for ASGI)."""
        return await self.tracker.confirm_token_async(token)

    def strip_token(self, query: str) -> str:
        """The query string without the token parameter (``hide_token``)."""
        return "&".join(
            piece
            for piece in query.split("&")
            if piece and unquote_plus(piece.partition("=")[0]) != self.param
        )

    def redirect_for(self, result: ConfirmResult) -> str | None:
        """Where the middleware should answer with a redirect itself, or ``None`` to pass
        the request to the app. Targets only ever come from the settings, never from the
        request, so a link cannot be turned into an open redirect."""
        s = self.settings
        if s.confirmed_redirect is None:
            return None
        if result.status in ("confirmed", "duplicate", "ignored"):
            return s.confirmed_redirect
        if result.status == "expired":
            return s.expired_redirect or s.invalid_redirect or s.confirmed_redirect
        return s.invalid_redirect or s.confirmed_redirect


class _Prefixes:
    __slots__ = ("prefixes",)

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        self.prefixes = prefixes

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and path.startswith(self.prefixes)
