"""Link-preview bots and security scanners: visits that must never confirm.

Messaging apps (iMessage, WhatsApp, Slack, Telegram, X, LinkedIn, Discord, Teams, Google
Messages) and mail or link scanners fetch a link before, or instead of, the person. Such
a fetch is not the person acting, so it must not count.

:class:`BotMatcher` combines the maintained pattern list of the ``crawler-user-agents``
package (about 1,500 regular expressions) with this project's additions. The package
tries its patterns one after another, which costs a few hundred microseconds for every
user agent it has not seen. Here every pattern is reduced, once, to a literal that any
match of it must contain; the literals are merged into one trie-shaped regular expression
that a single scan of the (case-folded) user agent runs, and only a pattern whose literal
turns up is then tried in full. A browser's user agent usually contains none of them, so
it costs one scan; a bounded cache answers user agents seen recently.
"""

from __future__ import annotations

import collections
import functools
import re
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = [
    "EXTRA_PATTERNS",
    "MAX_USER_AGENT",
    "TEST_CLIENT_PATTERNS",
    "BotMatcher",
    "is_test_client",
    "maintained_patterns",
]

EXTRA_PATTERNS: tuple[str, ...] = (
    # Link previews. iMessage sends "facebookexternalhit/1.1 Facebot Twitterbot/1.0"
    # inside a Safari user agent; Telegram sends "TelegramBot (like TwitterBot)".
    r"facebookexternalhit",
    r"Facebot",
    r"Twitterbot",
    r"WhatsApp/\d",
    r"Slackbot",
    r"Slack-ImgProxy",
    r"TelegramBot",
    r"LinkedInBot",
    r"Discordbot",
    r"SkypeUriPreview",
    r"MicrosoftPreview",
    r"Teams/[\d.]+ .*Preview",
    r"Google-PageRenderer",
    r"GoogleMessages",
    r"GoogleOther",
    r"Googlebot",
    r"\(compatible; Google-",
    r"Snap URL Preview",
    r"Snapbot",
    r"redditbot",
    r"Pinterestbot",
    r"Iframely",
    r"Embedly",
    r"BingPreview",
    r"Applebot",
    # Mail and link scanners that open every URL in a message.
    r"Mimecast",
    r"Proofpoint",
    r"Barracuda",
    r"Microsoft Office/\d",
    r"ms-office",
    r"Symantec",
    r"ZScaler",
)
"""This project's additions, matched case-insensitively and always used (with or
without the maintained list)."""

TEST_CLIENT_PATTERNS: tuple[str, ...] = (
    r"testclient$",  # Starlette's and Litestar's TestClient
    r"Werkzeug/",  # Flask's test client
    r"Quart$",  # Quart's test client
    r"python-httpx2?/",  # httpx and httpx2 (AsyncClient over ASGITransport)
    r"python-requests/",
    r"Python-urllib/",
    r"Python/[\d.]+ aiohttp/",
    r"curl/",
)
"""User agents of the HTTP clients apps are tested with, each matched at the start of the
user agent (case-sensitive). With a missing or blank user agent (Django's test client
sends none), they are what ``count_test_clients`` turns into people: never a person's
browser, so never a person by default."""

MAX_USER_AGENT = 512
"""Characters of a user agent that are looked at. Preview bots send short ones; the
bound keeps an oversized header from costing time or cache memory."""

_TEST_CLIENT = re.compile("|".join(f"(?:{p})" for p in TEST_CLIENT_PATTERNS))
_CLASS_ESCAPES = frozenset("dDwWsSbBAZ")
_META = frozenset(".^$+[]()|\\")
_MIN_LITERAL = 3
_INDEX_LENGTH = 4
# Only used to choose which piece of each pattern to index, never to decide.
_BROWSER_SAMPLE = (
    "mozilla/5.0 (windows nt 10.0; win64; x64) applewebkit/537.36 (khtml, like gecko) "
    "chrome/126.0.0.0 safari/537.36 edg/126.0.0.0 (iphone; cpu iphone os 17_5 like mac os x) "
    "version/17.5 mobile/15e148 safari/604.1 (linux; android 14; pixel 8) mobile "
    "(macintosh; intel mac os x 10_15_7) (x11; linux x86_64; rv:127.0) gecko/20100101 "
    "firefox/127.0 samsungbrowser/25.0 crios/126.0 fxios/127.0 [fban/fbios;fbav/400.0] "
    "instagram 300.0.0 (iphone14,2; ios 17_0; en_us)"
)
_BROWSER_CHARS = collections.Counter(_BROWSER_SAMPLE)


def is_test_client(user_agent: str | None) -> bool:
    """Whether ``user_agent`` is a test client's (:data:`TEST_CLIENT_PATTERNS`) or missing."""
    ua = user_agent[:MAX_USER_AGENT] if user_agent else ""
    return not ua.strip() or _TEST_CLIENT.match(ua) is not None


def maintained_patterns() -> list[str]:
    """The maintained list from ``crawler-user-agents`` (case-sensitive, as published)."""
    import crawleruseragents

    return [entry["pattern"] for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA]


def _alternatives(pattern: str) -> list[str]:
    """``pattern`` split at its top-level ``|`` (outside groups and classes)."""
    parts: list[str] = []
    depth = 0
    start = 0
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "[":
            i = _class_end(pattern, i)
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
        i += 1
    parts.append(pattern[start:])
    return parts


def _class_end(pattern: str, start: int) -> int:
    """Index of the ``]`` closing the class that opens at ``start`` (or the last index)."""
    i = start + 1
    if i < len(pattern) and pattern[i] == "^":
        i += 1
    if i < len(pattern) and pattern[i] == "]":
        i += 1
    while i < len(pattern):
        if pattern[i] == "\\":
            i += 2
            continue
        if pattern[i] == "]":
            return i
        i += 1
    return len(pattern) - 1


def _required_literals(pattern: str) -> list[str]:
    """Case-folded literal runs that every match of ``pattern`` (one alternative, no
    top-level ``|``) must contain. Conservative: whatever it cannot read for sure (a
    group, a class, an unusual escape) ends the current run instead of joining it."""
    runs: list[str] = []
    run: list[str] = []

    def cut() -> None:
        if run:
            runs.append("".join(run))
            run.clear()

    depth = 0
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            nxt = pattern[i + 1 : i + 2]
            i += 2
            if depth:
                continue
            if not nxt:
                return []
            if nxt.isalnum():
                if nxt not in _CLASS_ESCAPES:
                    return []  # \x41, \u00e9, \1, \N{...}: not worth reading
                cut()
            else:
                run.append(nxt.casefold())
            continue
        if ch == "[":
            end = _class_end(pattern, i)
            members = pattern[i + 1 : end]
            # [wW]: one letter in either case is that letter, case-folded.
            pair = len(members) == 2 and members.isalpha() and members[0] != members[1]
            if depth == 0 and pair and members[0].casefold() == members[1].casefold():
                run.append(members[0].casefold())
            else:
                cut()
            i = end
        elif ch == "(":
            depth += 1
            cut()
        elif ch == ")":
            depth -= 1
        elif depth:
            pass
        elif ch in "?*{":
            if run:
                run.pop()  # the previous character may be absent
            cut()
            if ch == "{":
                close = pattern.find("}", i)
                i = close if close > 0 else i
        elif ch in _META:
            cut()
        else:
            run.append(ch.casefold())
        i += 1
    cut()
    return runs


def _trie_regex(words: Iterable[str]) -> str:
    """One regular expression matching any of ``words``, shaped as their trie: every
    branch starts with a different character, so at each position the engine follows
    one path, and the greedy match is the longest word starting there."""
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict[str, Any]) -> str:
        branches = [re.escape(ch) + emit(node[ch]) for ch in sorted(node) if ch]
        if not branches:
            return ""
        ends_here = "" in node
        if len(branches) == 1 and not ends_here:
            return branches[0]
        group = "(?:" + "|".join(branches) + ")"
        return group + "?" if ends_here else group

    return emit(trie)


class BotMatcher:
    """Decides whether a user agent belongs to a link-preview bot or scanner.

    ``patterns`` are regular expressions searched anywhere in the user agent; a string is
    compiled as it is (case-sensitive), a compiled pattern keeps its flags. Build it once
    (it takes a few tens of milliseconds); :meth:`is_bot` is thread-safe and remembers
    the answers for the last ``cache_size`` user agents.

    ``count_test_clients`` decides for test clients' user agents (:func:`is_test_client`,
    a missing one included) before the patterns are looked at: ``False``, they are bots;
    ``True``, people (for an app's own tests only); ``None`` (the default of a matcher
    built from patterns), the patterns decide, and a missing user agent is a bot.
    """

    def __init__(
        self,
        patterns: Iterable[str | re.Pattern[str]],
        *,
        cache_size: int = 4096,
        count_test_clients: bool | None = None,
    ) -> None:
        self.count_test_clients = count_test_clients
        unique: dict[tuple[str, int], re.Pattern[str]] = {}
        for pattern in patterns:
            regex = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern)
            unique.setdefault((regex.pattern, regex.flags), regex)
        self.patterns: tuple[re.Pattern[str], ...] = tuple(unique.values())
        """Every pattern, compiled, duplicates removed."""
        by_literal: dict[str, list[re.Pattern[str]]] = {}
        unindexed: list[re.Pattern[str]] = []
        for regex in self.patterns:
            literals = _index_literals(regex)
            if literals is None:
                unindexed.append(regex)
            for literal in literals or ():
                by_literal.setdefault(literal, []).append(regex)
        self._by_literal = {k: tuple(v) for k, v in by_literal.items()}
        self._scan = re.compile(_trie_regex(by_literal)).search if by_literal else None
        self._unindexed = tuple(unindexed)
        self._cached = functools.lru_cache(maxsize=cache_size)(self._decide)

    @classmethod
    def default(
        cls, extra: Iterable[str] = (), *, maintained: bool = True, count_test_clients: bool = False
    ) -> BotMatcher:
        """The maintained list (unless ``maintained=False``) plus :data:`EXTRA_PATTERNS`
        and ``extra``, both case-insensitive; test clients are bots unless
        ``count_test_clients``. Built once per combination and shared."""
        return _default_matcher(tuple(extra), maintained, count_test_clients)

    def is_bot(self, user_agent: str | None) -> bool:
        """``True`` for a link-preview bot or scanner, and for an empty or missing user
        agent (every browser sends one; a fetch without one is a script), unless
        ``count_test_clients`` says otherwise. Cached."""
        return self._cached(user_agent[:MAX_USER_AGENT] if user_agent else "")

    def _decide(self, user_agent: str) -> bool:
        if self.count_test_clients is not None and is_test_client(user_agent):
            return not self.count_test_clients
        return not user_agent.strip() or self.search(user_agent) is not None

    def search(self, user_agent: str | None) -> re.Pattern[str] | None:
        """The pattern that marks ``user_agent`` as a bot, or ``None``. Not cached; looks
        at the first :data:`MAX_USER_AGENT` characters only."""
        if not user_agent:
            return None
        ua = user_agent[:MAX_USER_AGENT]
        for regex in self._candidates(ua.casefold()):
            if regex.search(ua):
                return regex
        for regex in self._unindexed:
            if regex.search(ua):
                return regex
        return None

    def _candidates(self, folded: str) -> Iterator[re.Pattern[str]]:
        """Patterns whose literal occurs in ``folded``, each once, leftmost first."""
        scan = self._scan
        if scan is None:
            return
        by_literal = self._by_literal
        seen: set[int] = set()
        found = scan(folded)
        while found is not None:
            # The longest literal starting here; the shorter ones are its prefixes.
            longest = found.group()
            for end in range(_MIN_LITERAL, len(longest) + 1):
                for regex in by_literal.get(longest[:end], ()):
                    if id(regex) not in seen:
                        seen.add(id(regex))
                        yield regex
            found = scan(folded, found.start() + 1)


def _index_literals(regex: re.Pattern[str]) -> set[str] | None:
    """One short literal per top-level alternative of ``regex`` that every match of that
    alternative contains, or ``None`` when some alternative has none worth indexing."""
    if regex.flags & re.VERBOSE:
        return None
    chosen = set()
    for alternative in _alternatives(regex.pattern):
        runs = [run for run in _required_literals(alternative) if len(run) >= _MIN_LITERAL]
        if not runs:
            return None
        chosen.add(min(_pieces(runs), key=_rarity))
    return chosen


def _pieces(runs: list[str]) -> Iterator[str]:
    """Every piece of :data:`_INDEX_LENGTH` characters of ``runs`` (a shorter run whole):
    a piece of a required literal is required too."""
    for run in runs:
        if len(run) <= _INDEX_LENGTH:
            yield run
        else:
            for start in range(len(run) - _INDEX_LENGTH + 1):
                yield run[start : start + _INDEX_LENGTH]


def _rarity(piece: str) -> tuple[bool, int, int]:
    # Pieces browsers rarely contain, starting with a character they rarely use: the scan
    # skips most positions of a browser's user agent at the first character.
    return piece in _BROWSER_SAMPLE, _BROWSER_CHARS.get(piece[0], 0), -len(piece)


@functools.lru_cache(maxsize=8)
def _default_matcher(
    extra: tuple[str, ...], maintained: bool, count_test_clients: bool
) -> BotMatcher:
    ours = [re.compile(p, re.IGNORECASE) for p in (*EXTRA_PATTERNS, *extra)]
    patterns = [*(maintained_patterns() if maintained else ()), *ours]
    return BotMatcher(patterns, count_test_clients=count_test_clients)
