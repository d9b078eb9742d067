"""The Prometheus example of the Metrics and logs page: the Starlette example under uvicorn,
with ``serve_metrics()`` called at startup, scraped by Prometheus's own text parser after
a sign-in link was sent, previewed, opened and reported."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from twilio_feedback.testing import FakeTwilio

from ..conftest import SECRET_KEY
from ..servers import free_port
from .test_examples import EXAMPLES, PHONE, PHONE_BROWSER, PREVIEWS, SENDER, _wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

STARTUP = """
import os
import uvicorn

from prometheus_metrics import serve_metrics

serve_metrics(int(os.environ["METRICS_PORT"]))
uvicorn.run("starlette_app:app", host="127.0.0.1", port=int(os.environ["PORT"]))
"""


@pytest.fixture
def server(tmp_path: Path, fake_twilio: FakeTwilio) -> Iterator[tuple[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWILIO_")}
    port, metrics_port = free_port(), free_port()
    env.update(
        TWILIO_ACCOUNT_SID=fake_twilio.account_sid,
        TWILIO_AUTH_TOKEN=fake_twilio.auth_token,
        TWILIO_PHONE_NUMBER=SENDER,
        TWILIO_FEEDBACK_SECRET_KEY=SECRET_KEY,
        TWILIO_FEEDBACK_API_BASE_URL=fake_twilio.base_url,
        PORT=str(port),
        METRICS_PORT=str(metrics_port),
    )
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", STARTUP], cwd=EXAMPLES, env=env, stdout=out, stderr=out
        )
    try:
        url, metrics_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}"
        _wait_ready(process, url + "/", log)
        _wait_ready(process, metrics_url + "/metrics", log)
        yield url, metrics_url + "/metrics"
    finally:
        process.terminate()
        process.wait(15)


def _samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(url, timeout=5, trust_env=False).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = {  # an empty label is no label, to Prometheus
                k: v for k, v in sample.labels.items() if v and not k.startswith("otel_scope")
            }
            samples[(sample.name, frozenset(labels.items()))] = sample.value
    return samples


def test_prometheus_scrapes_what_the_app_did(
    server: tuple[str, str], fake_twilio: FakeTwilio
) -> None:
    url, metrics_url = server
    with httpx.Client(timeout=10, trust_env=False) as http:
        sid = http.post(f"{url}/send", json={"to": PHONE}).json()["message_sid"]
        link = next(m.body for m in fake_twilio.messages if m.sid == sid).rsplit(" ", 1)[-1]
        assert http.get(link, headers={"User-Agent": PREVIEWS["WhatsApp"]}).json()["status"] == (
            "ignored"
        )
        assert http.get(link, headers={"User-Agent": PHONE_BROWSER}).json()["status"] == (
            "confirmed"
        )
    fake_twilio.wait_for_feedback(1)

    def reported() -> bool:
        return _samples(metrics_url).get(("twilio_feedback_reports_total", frozenset())) == 1

    assert fake_twilio.wait_for(reported, timeout=10)
    samples = _samples(metrics_url)

    def confirmations(outcome: str, country: str | None = None) -> float:
        labels = {("outcome", outcome)} | ({("country", country)} if country else set())
        return samples[("twilio_feedback_confirmations_total", frozenset(labels))]

    assert confirmations("confirmed", "US") == confirmations("ignored") == 1
    assert ("twilio_feedback_confirmations_total", frozenset({("outcome", "confirmed")})) not in (
        {key for key, value in samples.items() if value}
    )
    assert confirmations("duplicate") == confirmations("invalid") == 0
    assert samples[("twilio_feedback_report_duration_seconds_count", frozenset())] == 1
    assert samples[("twilio_feedback_report_pending", frozenset())] == 0
    assert ("target_info", frozenset({("service_name", "sign-in")})) in {
        (name, frozenset(kv for kv in labels if kv[0] == "service_name"))
        for name, labels in samples
    }
