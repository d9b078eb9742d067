"""pytest plugin: FakeTwilio, and settings that point an app at it, for your tests.

Registered through the ``pytest11`` entry point, so the fixtures are available in any test
suite where twilio-feedback is installed, with no import or ``conftest.py`` line:

.. code-block:: python

    def test_sign_in_link(twilio_feedback_env, fake_twilio):
        with TestClient(app) as client:           # the app reads the environment
            client.post("/send", json={"to": "+15558675310"})
            link = fake_twilio.last_link(to="+15558675310")
            assert client.get(link).json()["status"] == "confirmed"
        fake_twilio.wait_for_feedback(1)

    @pytest.mark.fake_twilio(feedback_status=201)
    def test_old_twilio_answer(fake_twilio): ...

- ``fake_twilio``: a fresh emulator per test; ``fake_twilio_session``: one per session.
- ``twilio_feedback_settings``: :class:`~twilio_feedback.Settings` on the test's
  emulator, for an app that takes settings (``FeedbackTracker(settings)``,
  ``FeedbackMiddleware(settings=...)``).
- ``twilio_feedback_env``: the same settings as environment variables, set for the test
  (and every other twilio-feedback variable removed), for an app that reads them
  (``Settings.from_env()``, Flask's ``app.config``); the dict it returns can also go into
  a config mapping.

Both use the memory store, the fixed :data:`TEST_SECRET_KEY`, and ``count_test_clients``,
so the framework's test client counts as a person and confirms.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..settings import Settings
from .fake_twilio import FakeTwilio

__all__ = [
    "TEST_SECRET_KEY",
    "environ_for_tests",
    "fake_twilio",
    "fake_twilio_session",
    "twilio_feedback_env",
    "twilio_feedback_settings",
]

TEST_SECRET_KEY = "twilio-feedback-test-key-never-use-in-production"
"""The signing key of the test settings: fixed, so a test can make tokens of its own
(expired ones, say) with :class:`~twilio_feedback.tokens.TokenSigner`."""


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``fake_twilio`` marker (suites run with ``--strict-markers``)."""
    config.addinivalue_line(
        "markers",
        "fake_twilio(**kwargs): FakeTwilio arguments for the fake_twilio fixture "
        "(account_sid=, auth_token=, feedback_status=)",
    )


def environ_for_tests(fake: FakeTwilio) -> dict[str, str]:
    """The settings of the fixtures, as environment variables: ``fake``'s credentials and
    base URL, :data:`TEST_SECRET_KEY`, a memory store (without its production warning)
    and ``count_test_clients``."""
    return {
        **fake.environ(),
        "TWILIO_FEEDBACK_SECRET_KEY": TEST_SECRET_KEY,
        "TWILIO_FEEDBACK_STORE": "memory://?warn=false",
        "TWILIO_FEEDBACK_COUNT_TEST_CLIENTS": "true",
    }


@pytest.fixture
def fake_twilio(request: pytest.FixtureRequest) -> Iterator[FakeTwilio]:
    """A fresh FakeTwilio on 127.0.0.1 for one test, stopped afterwards (hanging requests
    included). ``@pytest.mark.fake_twilio(...)`` passes arguments to its constructor."""
    marker = request.node.get_closest_marker("fake_twilio")
    with FakeTwilio(**(marker.kwargs if marker else {})) as fake:
        yield fake


@pytest.fixture(scope="session")
def fake_twilio_session() -> Iterator[FakeTwilio]:
    """One FakeTwilio for the whole session, cheaper when many tests need one. State carries
    over between tests: call :meth:`~FakeTwilio.reset` where a test needs a clean one."""
    with FakeTwilio() as fake:
        yield fake


@pytest.fixture
def twilio_feedback_settings(fake_twilio: FakeTwilio) -> Settings:
    """Settings on the test's ``fake_twilio``: its credentials and base URL, the memory
    store, :data:`TEST_SECRET_KEY`, ``count_test_clients=True``."""
    return Settings.from_mapping(environ_for_tests(fake_twilio))


@pytest.fixture
def twilio_feedback_env(fake_twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The settings of ``twilio_feedback_settings`` as environment variables, set for this
    test; every other variable twilio-feedback reads is removed, so nothing of the
    developer's own environment leaks in. Returns them (a Flask ``app.config`` takes them
    as they are)."""
    environ = environ_for_tests(fake_twilio)
    for names in Settings.env_names().values():
        for name in names:
            if name not in environ:
                monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return environ
