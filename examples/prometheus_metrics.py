"""twilio-feedback's metrics (and any other OpenTelemetry metrics of the process), served
to Prometheus.

    pip install 'twilio-feedback[otel]' opentelemetry-sdk opentelemetry-exporter-prometheus

Call ``serve_metrics()`` once at startup, in every process that confirms or reports (each
gunicorn worker: give each its own port, or export with OTLP to a collector instead).
Prometheus then scrapes ``http://HOST:9464/metrics``.
"""

from __future__ import annotations

from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import start_http_server


def serve_metrics(port: int = 9464, addr: str = "127.0.0.1") -> None:
    """Serve ``/metrics`` on ``addr:port`` and make OpenTelemetry record into it."""
    start_http_server(port, addr=addr)
    provider = MeterProvider(
        resource=Resource.create({"service.name": "sign-in"}),
        metric_readers=[PrometheusMetricReader()],
    )
    metrics.set_meter_provider(provider)
