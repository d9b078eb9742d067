"""Link-preview and scanner detection: people pass, previews and scanners do not."""

from __future__ import annotations

import re

import crawleruseragents
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twilio_feedback.bots import (
    MAX_USER_AGENT,
    BotMatcher,
    _alternatives,
    _required_literals,
    is_test_client,
    maintained_patterns,
)

# Real people, in real browsers and in-app browsers: none of these may be flagged.
PEOPLE = {
    "Chrome Android": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36",
    "Chrome Android (reduced UA)": "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, "
    "like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36",
    "Safari iOS": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Safari iPadOS": "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
    "like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
    "Safari macOS": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, "
    "like Gecko) Version/17.4 Safari/605.1.15",
    "Chrome iOS": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) CriOS/126.0.6478.54 Mobile/15E148 Safari/604.1",
    "Firefox iOS": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) FxiOS/127.0 Mobile/15E148 Safari/605.1.15",
    "Edge iOS": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 EdgiOS/126.2592.56 Mobile/15E148 Safari/605.1.15",
    "Firefox Windows": "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 "
    "Firefox/127.0",
    "Firefox Android": "Mozilla/5.0 (Android 14; Mobile; rv:127.0) Gecko/127.0 Firefox/127.0",
    "Firefox Linux": "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:126.0) Gecko/20100101 "
    "Firefox/126.0",
    "Chrome Windows": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Chrome macOS": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, "
    "like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "ChromeOS": "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
    "Edge": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36 Edg/126.0.2592.68",
    "Edge Android": "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Mobile Safari/537.36 EdgA/126.0.2592.56",
    "Opera": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36 OPR/111.0.0.0",
    "Opera Mini": "Opera/9.80 (Android; Opera Mini/36.2.2254/119.132; U; id) Presto/2.12.423 "
    "Version/12.16",
    "Brave": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36 Brave/126",
    "Vivaldi": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36 Vivaldi/6.7.3329.41",
    "Yandex": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 YaBrowser/24.6.0.0 Safari/537.36",
    "Samsung Internet": "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like "
    "Gecko) SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36",
    "UC Browser": "Mozilla/5.0 (Linux; U; Android 12; en-US; SM-A125F Build/SP1A.210812.016) "
    "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/100.0.4896.58 UCBrowser/13.6.2.1316 "
    "Mobile Safari/537.36",
    "MIUI Browser": "Mozilla/5.0 (Linux; U; Android 13; en-us; 2201117TG Build/TKQ1.221114.001) "
    "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/112.0.5615.136 Mobile Safari/537.36 "
    "XiaoMi/MiuiBrowser/14.4.0-g",
    "Huawei Browser": "Mozilla/5.0 (Linux; Android 10; HarmonyOS; ELS-NX9; HMSCore 6.13.0.302) "
    "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/114.0.5735.196 HuaweiBrowser/14.0.6.300 Mobile "
    "Safari/537.36",
    "Kindle Silk": "Mozilla/5.0 (Linux; Android 9; KFTRWI) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Silk/126.3.1 like Chrome/126.0.6478.126 Safari/537.36",
    "DuckDuckGo": "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Version/4.0 Chrome/126.0.0.0 Mobile DuckDuckGo/5 Safari/537.36",
    "Android WebView": "Mozilla/5.0 (Linux; Android 12; SM-G991B Build/SP1A.210812.016; wv) "
    "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/126.0.6478.71 Mobile Safari/537.36",
    "Instagram iOS": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148 Instagram 300.0.0.0 (iPhone14,2; iOS 17_0; en_US; en; "
    "scale=3.00; 1170x2532; 514327624)",
    "Instagram Android": "Mozilla/5.0 (Linux; Android 13; SM-A536B Build/TP1A.220624.014; wv) "
    "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/126.0.6478.71 Mobile Safari/537.36 "
    "Instagram 337.0.0.35.102 Android (33/13; 450dpi; 1080x2177; samsung; SM-A536B; a53x; "
    "s5e8825; en_US; 614260155)",
    "Facebook iOS (FBAN)": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) "
    "AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/400.0.0.0;FBBV/1;"
    "FBDV/iPhone14,2;FBMD/iPhone;FBSN/iOS;FBSV/17.0;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5;FBRV/0]",
    "Facebook Android (FB_IAB)": "Mozilla/5.0 (Linux; Android 13; Pixel 7 Build/TQ3A.230805.001; "
    "wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/126.0.6478.71 Mobile "
    "Safari/537.36 [FB_IAB/FB4A;FBAV/472.0.0.43.88;]",
    "Messenger iOS": "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148 [FBAN/MessengerForiOS;FBAV/440.0.0.31.106;FBBV/545413463;"
    "FBDV/iPhone13,2;FBMD/iPhone;FBSN/iOS;FBSV/16.6;FBSS/3;FBCR/;FBID/phone;FBLC/en_US;FBOP/5]",
    "LinkedIn app": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148 [LinkedInApp]/9.30.1234",
    "X app": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
    "like Gecko) Mobile/15E148 Twitter for iPhone/10.48",
    "TikTok": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
    "like Gecko) Mobile/15E148 musical_ly_35.1.0 JsSdk/2.0 NetType/WIFI Channel/App Store "
    "ByteLocale/en Region/US ByteFullLocale/en WKWebView/1 BytedanceWebview/d8a21c6",
    "Snapchat app": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148 Snapchat/13.0.0.0 (like Safari/8617.2.4.10.8, panda)",
    "Pinterest app": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148 [Pinterest/iOS]",
    "LINE": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
    "like Gecko) Mobile/15E148 Safari Line/14.10.0",
    "WeChat": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
    "like Gecko) Mobile/15E148 MicroMessenger/8.0.49(0x18003129) NetType/WIFI Language/en",
    "Google app iOS": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) GSA/321.0.645846100 Mobile/15E148 Safari/604.1",
    "Google app Android": "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP2A.240605.024; wv) "
    "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/126.0.6478.71 Mobile Safari/537.36 "
    "GSA/15.24.28.29.arm64",
    "Telegram in-app": "Mozilla/5.0 (Linux; Android 13; SM-A546B Build/TP1A.220624.014; wv) "
    "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/126.0.6478.71 Mobile Safari/537.36 "
    "Telegram-Android/10.14.5 (Samsung SM-A546B; Android 13; SDK 33; HIGH)",
    "Teams desktop": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Teams/24.1.0.0 Chrome/120.0.0.0 Electron/28.0.0 Safari/537.36",
    "Internet Explorer 11": "Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; rv:11.0) like Gecko",
    "PlayStation": "Mozilla/5.0 (PlayStation; PlayStation 5/2.26) AppleWebKit/605.1.15 (KHTML, "
    "like Gecko) Version/13.0 Safari/605.1.15",
    "KaiOS": "Mozilla/5.0 (Mobile; LYF/F300B/LYF-F300B-001-01-15-130718-i; Android; rv:48.0) "
    "Gecko/48.0 Firefox/48.0 KAIOS/2.5",
}

# Link previews and scanners: every one of these must be flagged.
PREVIEWS = {
    "iMessage": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_1) AppleWebKit/601.2.4 (KHTML, "
    "like Gecko) Version/9.0.1 Safari/601.2.4 facebookexternalhit/1.1 Facebot Twitterbot/1.0",
    "WhatsApp Android": "WhatsApp/2.23.20.0 A",
    "WhatsApp iOS": "WhatsApp/2.24.13.78 i",
    "Slack unfurl": "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "Slack image proxy": "Slack-ImgProxy (+https://api.slack.com/robots)",
    "Telegram": "TelegramBot (like TwitterBot)",
    "Facebook": "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Facebot": "Facebot",
    "X": "Twitterbot/1.0",
    "LinkedIn": "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient "
    "+http://www.linkedin.com)",
    "Discord": "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
    "Skype": "Mozilla/5.0 (Windows NT 6.1; WOW64) SkypeUriPreview Preview/0.5 "
    "skype-url-preview@microsoft.com",
    "Teams": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/51.0.2704.79 Safari/537.36 Edge/14.14393 MicrosoftPreview/2.0 "
    "+https://aka.ms/MicrosoftPreview",
    "Google page renderer": "Mozilla/5.0 (Linux; Android 11) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/99.0 Mobile Safari/537.36 Google-PageRenderer Google "
    "(+https://developers.google.com/+/web/snippet/)",
    "Google Messages": "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0 Mobile Safari/537.36 (compatible; GoogleMessages)",
    "Googlebot": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "GoogleOther": "GoogleOther",
    "Google fetcher": "Mozilla/5.0 (compatible; Google-Safety; +http://www.google.com/bot.html)",
    "Snapchat": "Snap URL Preview Service; bot; snapchat; https://developers.snap.com/robots",
    "Bing preview": "Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/534+ (KHTML, like Gecko) "
    "BingPreview/1.0b",
    "Applebot": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, "
    "like Gecko) Version/13.1.1 Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)",
    "Outlook / Office": "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.4266; Pro)",
    "Office link check": "Mozilla/4.0 (compatible; ms-office; MSOffice 16)",
    "Barracuda": "Barracuda Sentinel (EE)",
    "Proofpoint": "Mozilla/5.0 (compatible; Proofpoint URL Defense)",
    "Mimecast": "Mimecast URL Protect",
    "curl": "curl/8.4.0",
    "python-requests": "python-requests/2.31.0",
    "empty": "",
    "blank": "   ",
}


@pytest.fixture(scope="module")
def matcher() -> BotMatcher:
    return BotMatcher.default()


@pytest.mark.parametrize("name", sorted(PREVIEWS))
def test_previews_and_scanners_are_bots(matcher: BotMatcher, name: str) -> None:
    assert matcher.is_bot(PREVIEWS[name])


@pytest.mark.parametrize("name", sorted(PEOPLE))
def test_people_are_not_bots(matcher: BotMatcher, name: str) -> None:
    assert matcher.search(PEOPLE[name]) is None
    assert not matcher.is_bot(PEOPLE[name])


def test_missing_user_agent_is_a_bot(matcher: BotMatcher) -> None:
    assert matcher.is_bot(None)
    assert matcher.search(None) is None


# What the test clients apps are tested with send (Django's sends nothing).
TEST_CLIENTS = {
    "Django": None,
    "blank": "  ",
    "Starlette / Litestar TestClient": "testclient",
    "Flask (Werkzeug)": "Werkzeug/3.1.3",
    "Quart": "Quart",
    "httpx": "python-httpx/0.28.1",
    "httpx2": "python-httpx2/2.16.2",
    "requests": "python-requests/2.32.3",
    "urllib": "Python-urllib/3.12",
    "aiohttp": "Python/3.12 aiohttp/3.10.5",
    "curl": "curl/8.5.0",
}


@pytest.mark.parametrize("name", sorted(TEST_CLIENTS))
def test_test_clients_are_bots_unless_counted(matcher: BotMatcher, name: str) -> None:
    agent = TEST_CLIENTS[name]
    assert is_test_client(agent)
    assert matcher.is_bot(agent)
    counting = BotMatcher.default(count_test_clients=True)
    assert not counting.is_bot(agent)
    assert counting is BotMatcher.default(count_test_clients=True)


@pytest.mark.parametrize("agent", ["Mozilla/5.0 testclient", "Quartz/1", "xcurl/1", "Werkzeug"])
def test_only_test_clients_own_user_agents_count(agent: str) -> None:
    assert not is_test_client(agent)


def test_counting_test_clients_keeps_previews_and_scanners_out() -> None:
    counting = BotMatcher.default(count_test_clients=True)
    for name, agent in PREVIEWS.items():
        if not is_test_client(agent):
            assert counting.is_bot(agent), name
    for name, agent in PEOPLE.items():
        assert not counting.is_bot(agent), name


def test_a_matcher_of_patterns_leaves_test_clients_to_its_patterns() -> None:
    plain = BotMatcher(["Bot/1"])
    assert plain.count_test_clients is None
    assert not plain.is_bot("testclient")
    assert not plain.is_bot("curl/8.5.0")
    assert plain.is_bot("")
    assert BotMatcher(["Bot/1"], count_test_clients=False).is_bot("testclient")
    assert not BotMatcher(["Bot/1"], count_test_clients=True).is_bot("")


def test_every_example_of_the_maintained_list_is_recognised(matcher: BotMatcher) -> None:
    missed = [
        instance
        for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA
        for instance in entry.get("instances", [])
        if matcher.search(instance) is None
    ]
    assert missed == []


def test_agrees_with_trying_every_pattern_on_the_maintained_examples(matcher: BotMatcher) -> None:
    samples = [
        instance
        for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA
        for instance in entry.get("instances", [])
    ]
    samples += list(PEOPLE.values()) + list(PREVIEWS.values())
    for ua in samples:
        brute = any(p.search(ua[:MAX_USER_AGENT]) for p in matcher.patterns)
        assert (matcher.search(ua) is not None) == brute, ua


_FRAGMENTS = [
    token
    for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA[::7]
    for instance in entry.get("instances", [])[:1]
    for token in instance.split()[:3]
] + [token for ua in PEOPLE.values() for token in ua.split()[:4]]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=12)), min_size=1, max_size=12)
)
def test_agrees_with_trying_every_pattern_on_mixed_user_agents(parts: list[str]) -> None:
    matcher = BotMatcher.default()
    ua = " ".join(parts)
    brute = any(p.search(ua[:MAX_USER_AGENT]) for p in matcher.patterns)
    assert (matcher.search(ua) is not None) == brute


def test_literals_are_really_required() -> None:
    """Every literal the index relies on occurs in every example its pattern matches."""
    for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA:
        regex = re.compile(entry["pattern"])
        for instance in entry.get("instances", []):
            found = regex.search(instance)
            if found is None:
                continue
            folded = instance.casefold()
            for alternative in _alternatives(entry["pattern"]):
                if re.search(alternative, instance):
                    for literal in _required_literals(alternative):
                        assert literal in folded, (entry["pattern"], literal, instance)


def test_our_additions_are_case_insensitive_and_kept_without_the_list() -> None:
    custom = BotMatcher.default([r"AcmeScanner/\d"], maintained=False)
    assert custom.is_bot("acmescanner/3 (link check)")
    assert custom.is_bot("WHATSAPP/2.23 A")
    assert not custom.is_bot("Wget/1.21")  # the maintained list is gone
    assert BotMatcher.default().is_bot("Wget/1.21")
    assert BotMatcher.default() is BotMatcher.default()  # built once, shared


def test_own_patterns_keep_their_flags_and_duplicates_go() -> None:
    matcher = BotMatcher(["Bot/1", "Bot/1", re.compile("probe", re.IGNORECASE)])
    assert len(matcher.patterns) == 2
    assert matcher.is_bot("a PROBE")
    assert not matcher.is_bot("bot/1")
    assert matcher.is_bot("x Bot/1")


def test_patterns_without_an_indexable_literal_still_count() -> None:
    matcher = BotMatcher([r"a|bc", r"\d+x", r"(?x) spaced  out", r"\x41BC"])
    assert matcher.is_bot("zzbc")
    assert matcher.is_bot("123x")
    assert matcher.is_bot("spacedout")
    assert matcher.is_bot("ABC")
    assert not matcher.is_bot("zzz")
    assert BotMatcher([]).search("anything") is None


def test_long_user_agents_are_bounded(matcher: BotMatcher) -> None:
    assert not matcher.is_bot(PEOPLE["Firefox Windows"] + " x" * 100_000)
    assert not matcher.is_bot("Mozilla/5.0 " + "a" * MAX_USER_AGENT + " Googlebot/2.1")


def test_answers_are_cached(matcher: BotMatcher) -> None:
    ua = PEOPLE["Chrome Windows"] + " cache-test"
    before = matcher._cached.cache_info().hits
    assert not matcher.is_bot(ua)
    assert not matcher.is_bot(ua)
    assert matcher._cached.cache_info().hits == before + 1


def test_maintained_patterns_are_the_packages() -> None:
    assert len(maintained_patterns()) == len(crawleruseragents.CRAWLER_USER_AGENTS_DATA)


@pytest.mark.parametrize(
    ("pattern", "literals"),
    [
        (r"Googlebot\/", ["googlebot/"]),
        (r"[wW]get", ["wget"]),
        (r"[wW]?get", ["get"]),
        (r"ab?cde", ["a", "cde"]),
        (r"^Mozilla\/5\.0 \(compatible; X", ["mozilla/5.0 (compatible; x"]),
        (r"(^| )sentry\/", ["sentry/"]),
        (r"Bot\d+Spider", ["bot", "spider"]),
        (r"Spider[\s\S]*spider\.com", ["spider", "spider.com"]),
        (r"a[\]x]bcd", ["a", "bcd"]),
        (r"(a[)]b)cde", ["cde"]),
        (r"ab{2}cd", ["a", "cd"]),
        (r"x\x41yz", []),
        (r"trailing\\", ["trailing\\"]),
    ],
)
def test_required_literals(pattern: str, literals: list[str]) -> None:
    assert _required_literals(pattern) == literals


@pytest.mark.parametrize(
    ("pattern", "parts"),
    [
        ("a|b", ["a", "b"]),
        ("(a|b)c", ["(a|b)c"]),
        ("[|]x|y", ["[|]x", "y"]),
        (r"a\|b", [r"a\|b"]),
    ],
)
def test_alternatives(pattern: str, parts: list[str]) -> None:
    assert _alternatives(pattern) == parts
