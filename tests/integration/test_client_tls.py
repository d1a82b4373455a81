"""An https target: the client checks the server's certificate against the system's trust
store (`SSL_CERT_FILE` names one), sends its body over TLS — joined, since a TLS socket
takes one buffer at a time, long prompts in parts included — and keeps the connection.

A real TLS server in this process (gevent), with a certificate from a test CA (trustme).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import trustme
from gevent.server import StreamServer

from kvswarm.client import CompletionRequest, StreamingClient, Timeouts
from kvswarm.textparts import JoinedText, SharedText
from tests.integration.test_client_timeouts import END, HEAD, read_head_and_body, token

LIMITS = Timeouts(connect_s=2, ttft_s=5, idle_s=5, total_s=10)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


class TlsServer:
    """Answers every request on a connection with two tokens; keeps each body and counts
    connections."""

    def __init__(self, certificate: trustme.LeafCert) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        certificate.configure_cert(context)
        self.bodies: list[bytes] = []
        self.headers: list[bytes] = []
        self.connections = 0
        self._server = StreamServer(("127.0.0.1", 0), self._handle, ssl_context=context)
        self._server.start()
        self.url = f"https://127.0.0.1:{self._server.server_port}/v1"

    def _handle(self, sock, _address) -> None:
        self.connections += 1
        try:
            while True:
                head, body = read_head_and_body(sock)
                self.headers.append(head)
                self.bodies.append(body)
                sock.sendall(HEAD + token("hello") + token(" there", "stop") + END)
        except OSError:
            pass  # the client closed the connection, or refused the handshake

    def stop(self) -> None:
        self._server.stop(timeout=1)


@pytest.fixture
def trusted(ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TlsServer]:
    """A TLS server whose CA the client trusts (through SSL_CERT_FILE, as a user would)."""
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    server = TlsServer(ca.issue_cert("127.0.0.1"))
    yield server
    server.stop()


def _chat(content: object) -> CompletionRequest:
    return CompletionRequest(
        endpoint="chat", model="m", max_tokens=2, messages=[{"role": "user", "content": content}]
    )


def test_a_long_prompt_in_parts_goes_over_tls_as_the_json_of_the_whole_text(
    trusted: TlsServer,
) -> None:
    document = SharedText('a "quoted" line\n' * 10_000)
    prompt = JoinedText(("tag\n\n", document, "\n\nWhat does it say?"))
    client = StreamingClient(trusted.url, api_key="secret", timeouts=LIMITS)
    result = client.complete(_chat(prompt))
    client.close()
    assert result.ok, result.error
    assert result.text == "hello there" and result.ttft_s is not None
    (body,) = trusted.bodies
    assert orjson.loads(body)["messages"] == [{"role": "user", "content": str(prompt)}]
    assert b"Authorization: Bearer secret" in trusted.headers[0]


def test_requests_over_tls_keep_one_connection(trusted: TlsServer) -> None:
    client = StreamingClient(trusted.url, timeouts=LIMITS)
    results = [client.complete(_chat(f"question {n}")) for n in range(3)]
    client.close()
    assert all(result.ok for result in results), [result.error for result in results]
    assert trusted.connections == 1
    assert len(trusted.bodies) == 3


def test_a_certificate_the_client_does_not_trust_is_a_connect_failure(
    ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = trustme.CA()  # the server's certificate comes from a CA nobody trusts
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    server = TlsServer(other.issue_cert("127.0.0.1"))
    try:
        result = StreamingClient(server.url, timeouts=LIMITS).complete(_chat("hello"))
    finally:
        server.stop()
    assert result.failure == "connect"
    assert "CERTIFICATE_VERIFY_FAILED" in result.error and "\n" not in result.error
    assert server.bodies == []
