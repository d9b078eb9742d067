"""The sign-in link, through FastAPI's test client and the Twilio emulator."""

from fastapi.testclient import TestClient
from fastapi_app import app


def test_the_sign_in_link_confirms_once(twilio_feedback_env, fake_twilio, monkeypatch):
    monkeypatch.setenv("TWILIO_PHONE_NUMBER", "+15017122661")
    with TestClient(app) as client:  # the middleware reads the settings at startup
        client.post("/send", json={"to": "+15558675310"})
        link = fake_twilio.last_link(to="+15558675310")
        assert client.get(link).json()["status"] == "confirmed"
        assert client.get(link).json()["status"] == "duplicate"
    [post] = fake_twilio.wait_for_feedback(1)
    assert post.outcome == "confirmed"
