"""The Python peer of bench/slow.sh: a plain WSGI application with the
demo application's three paths, served by Gunicorn's gthread workers with
nothing in front, as the slow clients find it:

- `/`: hello world (what wrk asks for);
- `/echo`: the request body back (what slow bodies send to);
- `/stream?chunks=N&size=B`: N chunks of B bytes (what slow readers read).
"""

from urllib.parse import parse_qs


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/echo":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        start_response(
            "200 OK",
            [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))],
        )
        return [body]
    if path == "/stream":
        query = parse_qs(environ.get("QUERY_STRING", ""))
        chunks = min(int(query.get("chunks", ["3"])[0]), 10_000)
        size = min(int(query.get("size", ["0"])[0]), 1 << 20)
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
        return (f"chunk {n}\n".encode().ljust(size, b".") for n in range(1, chunks + 1))
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return [b"Hello, world!\n"]
