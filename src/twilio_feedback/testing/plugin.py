"""pytest plugin: fixtures that run :class:`~twilio_feedback.testing.FakeTwilio` for your tests.

Registered through the ``pytest11`` entry point, so the fixtures are available in any test
suite where twilio-feedback is installed, with no import or ``conftest.py`` line:

.. code-block:: python

    def test_sign_in_link_is_reported(fake_twilio):
        settings = Settings(account_sid=fake_twilio.account_sid,
                            auth_token=fake_twilio.auth_token,
                            api_base_url=fake_twilio.base_url, secret_key=...)

    @pytest.mark.fake_twilio(feedback_status=201)
    def test_old_twilio_answer(fake_twilio): ...
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .fake_twilio import FakeTwilio

__all__ = ["fake_twilio", "fake_twilio_session"]


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``fake_twilio`` marker (suites run with ``--strict-markers``)."""
    config.addinivalue_line(
        "markers",
        "fake_twilio(**kwargs): FakeTwilio arguments for the fake_twilio fixture "
        "(account_sid=, auth_token=, feedback_status=)",
    )


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
