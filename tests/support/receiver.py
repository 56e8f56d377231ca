"""A webhook subscriber for the tests: a real HTTP server on 127.0.0.1 that records every
request it gets (headers, raw body), answers 500 to the first attempts at each delivery,
or hangs; stopped (and its hanging handlers released) on exit."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


class Receiver:
    """A subscriber on 127.0.0.1: answers 500 to the first ``failures`` attempts at each
    delivery, then 200; or, with ``hang``, answers nothing until closed."""

    def __init__(self, failures: int = 0, hang: bool = False) -> None:
        self.failures = failures
        self.hang = hang
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    delivery = self.headers["Signoff-Delivery"]
                    seen = sum(r["delivery"] == delivery for r in receiver.requests)
                    status = 500 if seen < receiver.failures else 200
                    receiver.requests.append({"delivery": delivery, "body": body,
                                              "headers": dict(self.headers),
                                              "status": status, "at": time.monotonic()})
                if receiver.hang:
                    receiver.released.wait(30)
                    return
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def delivered(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["status"] == 200]


def verify_function() -> Callable[..., bool]:
    """The receiver's check, exactly as docs/webhooks.md gives it."""
    doc = (ROOT / "docs" / "webhooks.md").read_text()
    section = doc[doc.index("## Verifying a delivery"):]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/webhooks.md", "exec"), namespace)
    return namespace["verify"]  # type: ignore[no-any-return]
