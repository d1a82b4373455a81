"""A small OpenAI-compatible streaming server of the tests' own, with ground truth.

It streams `max_tokens` chunks (first after `--ttft-ms`, then one every `--tpot-ms`) in
vLLM's SSE shape, and logs per request, as JSON lines: the X-Request-Id, the receipt time
(request fully read), the first-token write time and the last write time, all from
`time.monotonic()` (the client's `perf_counter` clock on Linux), and the client's
address (`peer`, the IP the connection came from). `GET /stats` says how many requests
it served, how many are in flight and how many connections it accepted. A prompt containing
`FAULT:<kind>` asks for a fault: `http500`, `disconnect`, `stall`, `badjson`, `error`,
`empty`, `nodone`.

Run: python -m tests.support.streamserver --port 0 --log FILE  (prints `PORT <n>`);
`--bind ADDRESS` listens on another address than 127.0.0.1; `--tokens N` streams N tokens
whatever a request's max_tokens (benchmarks: every locustfile gets the same streams).
`--lean` (benchmarks) keeps the server's own work per request small whatever the prompt's
size, so that a long prompt does not hold its loop while other requests' bytes wait
unread (which the client would see as TTFT and the log would not): the log has the
prompt's length in characters (`prompt_chars`) instead of its text, fault markers are not
looked for, and usage's prompt_tokens is an estimate (one per space, not a count).
`--api-key KEY` answers 401 to an API request without `Authorization: Bearer KEY` (as
`vllm serve --api-key` does for /v1 and /tokenize); `--headers-log FILE` appends every
request's method, path and headers, whatever the path (the secrets tests read what each
endpoint received); `--metrics` serves a small Prometheus page at `GET /metrics`.
"""

from __future__ import annotations

import gevent.monkey

gevent.monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import httptools  # noqa: E402
import orjson  # noqa: E402
from gevent.server import StreamServer  # noqa: E402

_FAULT = re.compile(r"FAULT:(\w+)")


class _Request:
    def __init__(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


_METRICS_PAGE = b"# TYPE streamserver_requests_total counter\nstreamserver_requests_total %d\n"
# Paths that need no key even with --api-key (vLLM leaves these open too).
_OPEN_PATHS = ("/health", "/stats", "/metrics")


class StreamServer_:
    def __init__(
        self,
        ttft_s: float,
        tpot_s: float,
        log_path: str | None,
        tokens: int = 0,
        api_key: str = "",
        headers_log_path: str | None = None,
        metrics: bool = False,
        lean: bool = False,
    ) -> None:
        self.lean = lean
        self.ttft_s = ttft_s
        self.tpot_s = tpot_s
        self.tokens = tokens
        self.api_key = api_key
        self.metrics = metrics
        self.log = open(log_path, "a", buffering=1) if log_path else None  # noqa: SIM115
        self.headers_log = (
            open(headers_log_path, "a", buffering=1) if headers_log_path else None  # noqa: SIM115
        )
        self.served = 0
        self.in_flight = 0
        self.connections = 0

    def handle(self, sock, address) -> None:
        self.connections += 1
        try:
            while self._serve_one(sock, address[0]):
                pass
        except OSError:
            pass
        finally:
            sock.close()

    def _serve_one(self, sock, peer: str) -> bool:
        request = _Request()
        parser = httptools.HttpRequestParser(request)
        while not request.complete:
            data = sock.recv(65536)
            if not data:
                return False
            parser.feed_data(data)
        received = time.monotonic()
        path = request.url.decode()
        if self.headers_log:
            entry = {"method": parser.get_method().decode(), "path": path, **request.headers}
            self.headers_log.write(json.dumps(entry) + "\n")
        authorized = request.headers.get("authorization") == f"Bearer {self.api_key}"
        if self.api_key and not authorized and not path.startswith(_OPEN_PATHS):
            self._send_json(sock, {"error": "invalid api key"}, "401 Unauthorized")
            return True
        body = orjson.loads(b"".join(request.body)) if request.body else {}
        if path.endswith("/tokenize"):
            text = body.get("prompt", "")
            self._send_json(sock, {"count": len(text.split()), "max_model_len": 100000})
            return True
        if path == "/health":
            self._send_json(sock, {})
            return True
        if path == "/metrics" and self.metrics:
            self._send(sock, _METRICS_PAGE % self.served, "text/plain; version=0.0.4")
            return True
        if path == "/stats":
            self._send_json(
                sock,
                {
                    "served": self.served,
                    "in_flight": self.in_flight,
                    "connections": self.connections,
                },
            )
            return True
        if not path.endswith(("/chat/completions", "/completions")):
            self._send_json(sock, {"error": "not found"}, "404 Not Found")
            return True
        self.served += 1
        self.in_flight += 1
        entry = {
            "request_id": request.headers.get("x-request-id", ""),
            "peer": peer,
            "path": path,
            "authorization": request.headers.get("authorization", ""),
            "received": received,
            "max_tokens": body.get("max_tokens"),
        }
        # What a model would read: the completion prompt, or the messages' contents.
        text = body.get("prompt") or "\n\n".join(
            m.get("content", "") for m in body.get("messages") or []
        )
        if self.lean:
            entry["prompt_chars"] = len(text)
            entry["fault"] = ""
        else:
            entry["prompt"] = body.get("prompt") or json.dumps(body.get("messages"))
            entry["text"] = text
            fault = _FAULT.search(entry["prompt"])
            entry["fault"] = fault.group(1) if fault else ""
        try:
            return self._respond(sock, body, entry, prompt_text=text, received=received)
        except OSError:
            entry["client_gone"] = True
            raise
        finally:
            self.in_flight -= 1
            # Every request the server saw is logged, even one the client abandoned.
            if self.log:
                self.log.write(json.dumps(entry) + "\n")

    def _send_json(self, sock, obj, status: str = "200 OK") -> None:
        self._send(sock, orjson.dumps(obj), "application/json", status)

    def _send(self, sock, payload: bytes, content_type: str, status: str = "200 OK") -> None:
        sock.sendall(
            f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )

    def _respond(self, sock, body: dict, entry: dict, *, prompt_text: str, received: float) -> bool:
        fault = entry["fault"]
        # The test server's tokenizer: one token per whitespace-separated word (splitting a
        # 160-kB prompt costs its loop ~1.4 ms: lean, an estimate).
        words = prompt_text.count(" ") + 1 if self.lean else len(prompt_text.split())
        if fault == "http500":
            self._send_json(
                sock, {"object": "error", "message": "boom"}, "500 Internal Server Error"
            )
            return True
        chat = "messages" in body
        n = self.tokens or int(body.get("max_tokens") or 16)
        if not body.get("stream"):
            gevent.sleep(
                max(0.0, received + self.ttft_s + self.tpot_s * (n - 1) - time.monotonic())
            )
            text = " ".join(f"tok{i}" for i in range(n))
            choice = {"index": 0, "finish_reason": "length"}
            choice.update(
                {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
            )
            self._send_json(
                sock,
                {"choices": [choice], "usage": {"prompt_tokens": words, "completion_tokens": n}},
            )
            entry["first_write"] = entry["last_write"] = time.monotonic()
            return True
        sock.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )

        def event(obj) -> None:
            data = b"data: " + (obj if isinstance(obj, bytes) else orjson.dumps(obj)) + b"\n\n"
            sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))

        kind = "chat.completion.chunk" if chat else "text_completion"
        if chat:
            event(
                {
                    "object": kind,
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}],
                }
            )
        for i in range(n):
            due = received + self.ttft_s + self.tpot_s * i
            delay = due - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
            if i == 1 and fault == "disconnect":
                return False
            if i == 1 and fault == "stall":
                gevent.sleep(3600)
            if i == 1 and fault == "badjson":
                event(b"{not json")
                continue
            if i == 1 and fault == "error":
                event({"error": {"message": "engine died", "code": 500}})
                break
            text = "" if fault == "empty" else f" tok{i}"
            delta = {"delta": {"content": text}} if chat else {"text": text}
            finish = "length" if i == n - 1 else None
            event({"object": kind, "choices": [{"index": 0, **delta, "finish_reason": finish}]})
            now = time.monotonic()
            if i == 0:
                entry["first_write"] = now
            entry["last_write"] = now
        event(
            {
                "object": kind,
                "choices": [],
                "usage": {
                    "prompt_tokens": words,
                    "completion_tokens": n,
                    "total_tokens": n + 7,
                    "prompt_tokens_details": {"cached_tokens": 3},
                },
            }
        )
        if fault != "nodone":
            event(b"[DONE]")
        sock.sendall(b"0\r\n\r\n")
        return True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ttft-ms", type=float, default=50.0)
    parser.add_argument("--tpot-ms", type=float, default=10.0)
    parser.add_argument("--log")
    parser.add_argument(
        "--tokens", type=int, default=0, help="stream this many tokens whatever max_tokens says"
    )
    parser.add_argument("--api-key", default="", help="answer 401 to API requests without it")
    parser.add_argument("--headers-log", help="append every request's headers to this file")
    parser.add_argument("--metrics", action="store_true", help="serve GET /metrics")
    parser.add_argument(
        "--lean", action="store_true", help="benchmarks: little work per request (see above)"
    )
    args = parser.parse_args()
    app = StreamServer_(
        args.ttft_ms / 1000.0,
        args.tpot_ms / 1000.0,
        args.log,
        args.tokens,
        api_key=args.api_key,
        headers_log_path=args.headers_log,
        metrics=args.metrics,
        lean=args.lean,
    )
    server = StreamServer((args.bind, args.port), app.handle, backlog=1024)
    server.start()
    print(f"PORT {server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
