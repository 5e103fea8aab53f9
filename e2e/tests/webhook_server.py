"""A tiny HTTPS mutating admission webhook (standard library only).

POST /mutate answers an AdmissionReview v1 by adding the label
`ringlane-e2e/mutated=<--value>` to the object. Every request is logged to
stdout as one JSON line, so a test can tell that the apiserver really called
it. Used by the e2e tests twice: run on the host (the apiserver calls
https://127.0.0.1:<port>) and run in a pod behind a Service (the apiserver
calls the Service's ClusterIP, like the Ringlane operator's webhook).

    python3 webhook_server.py --cert tls.crt --key tls.key [--port 0] [--value NAME]

With --port 0 the kernel picks a port; the first line printed is `listening <port>`.
"""
from __future__ import annotations

import argparse
import base64
import json
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LABEL = "ringlane-e2e/mutated"


def patch_for(obj: dict, value: str) -> list[dict]:
    """JSONPatch that sets LABEL, creating metadata.labels if absent."""
    if obj.get("metadata", {}).get("labels"):
        return [{"op": "add", "path": "/metadata/labels/" + LABEL.replace("~", "~0").replace("/", "~1"), "value": value}]
    return [{"op": "add", "path": "/metadata/labels", "value": {LABEL: value}}]


def review_response(review: dict, value: str) -> dict:
    request = review["request"]
    patch = json.dumps(patch_for(request.get("object") or {}, value)).encode()
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {
            "uid": request["uid"],
            "allowed": True,
            "patchType": "JSONPatch",
            "patch": base64.b64encode(patch).decode(),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--value", default="webhook")
    args = ap.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                review = json.loads(body)
                out = json.dumps(review_response(review, args.value)).encode()
            except (ValueError, KeyError) as e:
                self.send_error(400, str(e))
                return
            req = review["request"]
            print(json.dumps({"path": self.path, "kind": req["kind"]["kind"], "operation": req["operation"],
                              "namespace": req.get("namespace"), "name": (req.get("object") or {}).get("metadata", {}).get("name"),
                              "dryRun": req.get("dryRun", False)}), flush=True)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, fmt: str, *a: object) -> None:
            sys.stderr.write("webhook: " + fmt % a + "\n")

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
