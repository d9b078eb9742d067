"""The sign-in link, through Quart's test client and the Twilio emulator."""

from quart_app import create_app


async def test_the_sign_in_link_confirms_once(twilio_feedback_env, fake_twilio):
    app = create_app({"TWILIO_PHONE_NUMBER": "+15017122661"})
    async with app.test_app() as test_app:  # runs the startup, as a server would
        client = test_app.test_client()
        await client.post("/send", json={"to": "+15558675310"})
        token = fake_twilio.last_token(to="+15558675310")
        response = await client.get("/confirm", query_string={"id": token})
        assert (await response.get_json())["status"] == "confirmed"
        response = await client.get("/confirm", query_string={"id": token})
        assert (await response.get_json())["status"] == "duplicate"
    [post] = fake_twilio.wait_for_feedback(1)
    assert post.outcome == "confirmed"
