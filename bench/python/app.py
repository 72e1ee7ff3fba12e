"""The Python peer of bench/stack.sh: a hello-world WSGI application
wrapped in the stack a Django team runs in front of one, as Gunicorn
serves it:

- a request-id and security-headers middleware (what django-request-id
  and Django's SecurityMiddleware add);
- OpenTelemetry's WSGI middleware, exporting with a batch OTLP/HTTP
  exporter (set up per worker in gunicorn.conf.py's post_fork);
- sentry_sdk's WSGI middleware (its client also made in post_fork);
- a prometheus_client histogram of request durations, in multiprocess
  mode (PROMETHEUS_MULTIPROC_DIR), as Gunicorn needs;
- Gunicorn's own access log (gunicorn.conf.py).
"""

import time
import uuid

from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from prometheus_client import Histogram
from sentry_sdk.integrations.wsgi import SentryWsgiMiddleware

REQUEST_DURATION = Histogram(
    "http_server_request_duration_seconds",
    "Duration of HTTP server requests.",
    ["http_request_method", "http_response_status_code"],
)

SECURITY_HEADERS = [
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),
]


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return [b"Hello, world!\n"]


class Metrics:
    """Times each request into the histogram."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        status = ["500"]

        def start(code, headers, exc_info=None):
            status[0] = code.split(" ", 1)[0]
            return start_response(code, headers, exc_info)

        try:
            return self.app(environ, start)
        finally:
            REQUEST_DURATION.labels(environ["REQUEST_METHOD"], status[0]).observe(
                time.perf_counter() - started
            )


class Headers:
    """Adopts or makes a request id, echoes it, adds the security headers."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        request_id = environ.get("HTTP_X_REQUEST_ID") or str(uuid.uuid4())
        environ["HTTP_X_REQUEST_ID"] = request_id

        def start(code, headers, exc_info=None):
            headers = headers + [("X-Request-Id", request_id)] + SECURITY_HEADERS
            return start_response(code, headers, exc_info)

        return self.app(environ, start)


application = Headers(OpenTelemetryMiddleware(SentryWsgiMiddleware(Metrics(hello))))
