from __future__ import annotations

import crawleruseragents
import pytest

from twilio_feedback.bots import BotMatcher, _required_literals

PREVIEWS = {
    "iMessage": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_1) AppleWebKit/601.2.4 (KHTML, "
    "like Gecko) Version/9.0.1 Safari/601.2.4 facebookexternalhit/1.1 Facebot Twitterbot/1.0",
    "WhatsApp": "WhatsApp/2.23.20.0 A",
    "Slack": "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "Telegram": "TelegramBot (like TwitterBot)",
    "Facebook": "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "X": "Twitterbot/1.0",
    "LinkedIn": "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
    "Discord": "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
    "Skype/Teams": "Mozilla/5.0 (Windows NT 6.1; WOW64) SkypeUriPreview Preview/0.5 "
    "skype-url-preview@microsoft.com",
    "Teams": "Mozilla/5.0 (compatible; MicrosoftPreview/2.0; +https://aka.ms/MicrosoftPreview)",
    "Google": "Mozilla/5.0 (Linux; Android 11) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/99.0 Mobile Safari/537.36 Google-PageRenderer Google "
    "(+https://developers.google.com/+/web/snippet/)",
    "Googlebot": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Outlook scanner": "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.4266)",
    "curl": "curl/8.4.0",
    "empty": "",
}

PEOPLE = {
    "Chrome Android": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36",
    "Safari iOS": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Firefox": "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Edge": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0",
    "Chrome macOS": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, "
    "like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Samsung": "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36",
    "Instagram in-app": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) "
    "AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Instagram 300.0.0.0 "
    "(iPhone14,2; iOS 17_0; en_US)",
    "Facebook in-app": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) "
    "AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 "
    "[FBAN/FBIOS;FBAV/400.0.0.0;FBBV/1;FBDV/iPhone14,2]",
    "Android WebView": "Mozilla/5.0 (Linux; Android 13; wv) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Version/4.0 Chrome/119.0.0.0 Mobile Safari/537.36",
}


@pytest.fixture(scope="module")
def matcher() -> BotMatcher:
    return BotMatcher.default()


@pytest.mark.parametrize("name", sorted(PREVIEWS))
def test_previews_and_scanners_are_bots(matcher: BotMatcher, name: str) -> None:
    assert matcher.is_bot(PREVIEWS[name])


@pytest.mark.parametrize("name", sorted(PEOPLE))
def test_people_are_not_bots(matcher: BotMatcher, name: str) -> None:
    assert not matcher.is_bot(PEOPLE[name])


def test_every_example_of_the_maintained_list_is_recognised(matcher: BotMatcher) -> None:
    missed = [
        instance
        for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA
        for instance in entry.get("instances", [])
        if not matcher._is_bot(instance)
    ]
    assert missed == []


def test_extra_and_replacement_patterns() -> None:
    custom = BotMatcher.default([r"AcmeScanner/\d"], maintained=False)
    assert custom.is_bot("AcmeScanner/3 (link check)")
    assert custom.is_bot(PREVIEWS["WhatsApp"])  # project additions stay
    assert not custom.is_bot("Wget/1.21")  # the maintained list is gone
    assert BotMatcher.default().is_bot("Wget/1.21")


def test_long_user_agent_is_bounded(matcher: BotMatcher) -> None:
    assert not matcher.is_bot(PEOPLE["Firefox"] + " x" * 100_000)


@pytest.mark.parametrize(
    ("pattern", "literals"),
    [
        (r"Googlebot\/", ["googlebot/"]),
        (r"[wW]get", ["wget"]),
        (r"ab?cde", ["a", "cde"]),
        (r"foo|bar", []),
        (r"^Mozilla\/5\.0 \(compatible; X", ["mozilla/5.0 (compatible; x"]),
        (r"(^| )sentry\/", [" sentry/"[1:]]),
        (r"Bot\d+Spider", ["bot", "spider"]),
    ],
)
def test_required_literals(pattern: str, literals: list[str]) -> None:
    assert _required_literals(pattern) == literals
