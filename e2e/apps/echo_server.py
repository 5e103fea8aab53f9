"""A tiny HTTP backend for the end-to-end tests: answers every request with JSON naming the
backend (BACKEND env), the pod, the path and the request headers. Standard library only,
so it runs in the plain testbox image (passed in with `python3 -c`)."""
import json
import os
import signal
import socket
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Head and body leave in one send (flushed after each request): a pod killed mid-traffic
    # never leaves half a response, which no proxy could retry.
    wbufsize = 65536

    def do_GET(self):  # noqa: N802
        # ?delay_ms=N holds the response (requests in flight for the drain test).
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        time.sleep(min(int(query.get("delay_ms", ["0"])[0]), 30000) / 1000)
        body = json.dumps({
            "backend": os.environ.get("BACKEND", "?"),
            "pod": socket.gethostname(),
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
        }).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args):
        pass


# As PID 1 of its container it would ignore SIGTERM (no default action there): exit on it, like
# a well-behaved app, so a deleted pod's sidecar is stopped right after it.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Echo).serve_forever()
