"""Gunicorn's settings for bench/stack.sh. BIND, ACCESS_LOG, SENTRY_DSN,
OTEL_EXPORTER_OTLP_ENDPOINT and PROMETHEUS_MULTIPROC_DIR come from the
environment the benchmark sets."""

import os

bind = os.environ["BIND"]
workers = int(os.environ.get("WORKERS", "2"))
worker_class = "gthread"
threads = 8
keepalive = 300
accesslog = os.environ["ACCESS_LOG"]


def post_fork(server, worker):
    # Clients with threads are made after the fork, as both SDKs advise.
    import sentry_sdk
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    sentry_sdk.init(dsn=os.environ["SENTRY_DSN"])
    provider = TracerProvider(resource=Resource.create({"service.name": "gunicorn"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
