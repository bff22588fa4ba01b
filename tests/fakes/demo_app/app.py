"""A tiny notes app: one page and a JSON API, on the standard library only."""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOTES = [{"id": 1, "text": "Hello from agentd"}]


class Handler(BaseHTTPRequestHandler):
    def _send(self, status, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/":
            self._send(200, (HERE / "index.html").read_bytes(), "text/html; charset=utf-8")
        elif self.path == "/api/notes":
            self._send(200, NOTES)
        elif self.path == "/api/health":
            self._send(200, {"ok": True})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self):
        if self.path != "/api/notes":
            return self._send(404, {"error": "not found"})
        length = int(self.headers.get("Content-Length") or 0)
        try:
            text = json.loads(self.rfile.read(length) or b"{}")["text"].strip()
        except (ValueError, KeyError, AttributeError):
            return self._send(400, {"error": "send JSON like {\"text\": \"...\"}"})
        if not text:
            return self._send(400, {"error": "text must not be empty"})
        note = {"id": len(NOTES) + 1, "text": text}
        NOTES.append(note)
        self._send(201, note)

    def log_message(self, format, *args):
        sys.stderr.write("%s %s\n" % (self.command, self.path))


def make_server(port=0):
    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


if __name__ == "__main__":
    server = make_server(int(os.environ.get("PORT", "0")))
    print(f"serving on http://127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()
