"""The sign-in link, through Flask's test client and the Twilio emulator."""

import pytest
from flask_app import create_app

from twilio_feedback.flask import get_tracker


@pytest.fixture
def app(twilio_feedback_env):
    app = create_app({"TESTING": True, "TWILIO_PHONE_NUMBER": "+15017122661"})
    yield app
    get_tracker(app).close()


def test_the_sign_in_link_confirms_once(app, fake_twilio):
    client = app.test_client()
    client.post("/send", json={"to": "+15558675310"})
    link = fake_twilio.last_link(to="+15558675310")
    assert client.get(link).json["status"] == "confirmed"
    assert client.get(link).json["status"] == "duplicate"
    [post] = fake_twilio.wait_for_feedback(1)
    assert post.outcome == "confirmed"
