"""Your own Twilio client: the tracker sends, reports and looks messages up through it."""

from __future__ import annotations

import os

from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from twilio_feedback import FeedbackTracker, Settings

client = Client(
    os.environ["TWILIO_API_KEY"],
    os.environ["TWILIO_API_SECRET"],
    os.environ["TWILIO_ACCOUNT_SID"],
    edge="dublin",
    region="ie1",
    http_client=TwilioHttpClient(proxy={"https": os.environ["HTTPS_PROXY"]}),
)
tracker = FeedbackTracker(Settings.from_env(), client=client)
