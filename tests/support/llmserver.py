"""A scripted OpenAI-compatible chat-completions server, over real HTTP on 127.0.0.1.

Each test gives a script: a list of turns, served in order, one per request (a turn may be
a function of the request body). The server records every request body, can hold a
request open until the test releases it (to kill the daemon mid-call), and can fail
requests with an HTTP status. The real `openai` client talks to it unchanged.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LOOPBACK = "127.0.0.1"


@dataclass
class Turn:
    """One scripted answer: text and/or tool calls, token usage, or an HTTP error."""

    content: str | None = None
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    prompt_tokens: int = 100
    completion_tokens: int = 20
    status: int = 200
    raw_arguments: dict[int, str] = field(default_factory=dict)

    def body(self, n: int, model: str) -> dict[str, Any]:
        """The chat.completion JSON for request number `n`."""
        calls = [
            {
                "id": f"call_{n}_{i}",
                "type": "function",
                "function": {
                    "name": name,
                    "arguments": self.raw_arguments.get(i, json.dumps(args)),
                },
            }
            for i, (name, args) in enumerate(self.tool_calls)
        ]
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if calls:
            message["tool_calls"] = calls
        return {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if calls else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
            },
        }


def call(name: str, **args: Any) -> tuple[str, dict[str, Any]]:
    """A tool call for a Turn."""
    return (name, args)


Script = list[Turn | Callable[[dict[str, Any]], Turn]]


class ScriptedLLM:
    """The server. `requests` holds every request body in arrival order."""

    def __init__(self, script: Script | None = None, default: Turn | None = None) -> None:
        self.script: Script = list(script or [])
        self.default = default or Turn(content='{"summary": "nothing more to do"}')
        self.requests: list[dict[str, Any]] = []
        self.holds: dict[int, threading.Event] = {}
        self.arrived = threading.Condition()
        self.extra_routes: dict[str, Callable[[], tuple[int, bytes]]] = {}
        self._served = 0
        self._lock = threading.Lock()
        llm = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if not self.path.endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                body = json.loads(raw or b"{}")
                with llm._lock:
                    llm.requests.append(body)
                    n = len(llm.requests)
                    turn_or_fn = llm.script[llm._served] if llm._served < len(llm.script) else None
                    hold = llm.holds.get(n)
                with llm.arrived:
                    llm.arrived.notify_all()
                if hold is not None:
                    hold.wait(timeout=300)
                with llm._lock:
                    llm._served += 1
                turn = turn_or_fn(body) if callable(turn_or_fn) else (turn_or_fn or llm.default)
                if turn.status != 200:
                    self._send(
                        turn.status,
                        {"error": {"message": "scripted failure", "type": "server_error"}},
                    )
                    return
                self._send(200, turn.body(n, body.get("model", "scripted")))

            def do_GET(self) -> None:
                route = llm.extra_routes.get(self.path)
                if route is None:
                    self._send(404, {"error": "no such path"})
                    return
                status, payload = route()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client (a killed daemon) went away

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, 0), _Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="llm", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        """The base_url to configure (ends in /v1)."""
        return f"http://{LOOPBACK}:{self.server.server_address[1]}/v1"

    @property
    def origin(self) -> str:
        """http://127.0.0.1:port."""
        return f"http://{LOOPBACK}:{self.server.server_address[1]}"

    def hold(self, request_number: int) -> threading.Event:
        """Keep request number N (1-based) open until the returned event is set."""
        ev = threading.Event()
        self.holds[request_number] = ev
        return ev

    def wait_requests(self, n: int, timeout: float = 60.0) -> None:
        """Block until at least n requests have arrived."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"only {len(self.requests)} of {n} requests arrived")
                self.arrived.wait(left)

    def close(self) -> None:
        """Release holds and stop serving."""
        for ev in self.holds.values():
            ev.set()
        self.server.shutdown()
        self.server.server_close()


def assistant_turns(body: dict[str, Any]) -> int:
    """How many assistant messages a request carries (= its step number - 1)."""
    return sum(1 for m in body.get("messages", []) if m.get("role") == "assistant")


def fingerprint(body: dict[str, Any]) -> str:
    """What identifies a request's content: its messages without the volatile `Now:` line."""
    msgs = []
    for m in body.get("messages", []):
        content = m.get("content")
        if isinstance(content, str) and m.get("role") == "user":
            content = content.split("Now: ")[0]
        if isinstance(content, str) and m.get("role") == "tool":
            content = content.split(" ago)")[0].rsplit("(", 1)[0]
        msgs.append((m.get("role"), content, json.dumps(m.get("tool_calls"), sort_keys=True)))
    return json.dumps(msgs)


def by_step(turns: Script, length: int = 50) -> Script:
    """A script answering by step (assistant messages so far), so a re-asked step gets the
    same answer as the first time it was asked."""

    def pick(body: dict[str, Any]) -> Turn:
        n = assistant_turns(body)
        t = turns[n] if n < len(turns) else Turn(content='{"summary": "done"}')
        return t(body) if callable(t) else t

    return [pick] * length
