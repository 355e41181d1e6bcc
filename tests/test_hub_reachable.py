"""`hub_reachable` honours the proxy environment (HTTPS_PROXY / HTTP_PROXY / NO_PROXY), on local fakes."""

import base64
import socket
import threading
import time

import pytest

from hf_ssl_robust.encoders import hub_reachable

PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY")
TUNNEL_OK = b"HTTP/1.1 200 Connection established\r\n\r\n"


class FakeServer:
    """A thread on 127.0.0.1 that records what each connection sends up to a blank line, then answers.

    As a proxy it answers a CONNECT with ``reply``; as a plain "Hub" it just accepts (``reply=None``
    and ``read=False``). ``reply=b""`` never answers (a proxy that hangs).
    """

    def __init__(self, reply: bytes | None = TUNNEL_OK, read: bool = True):
        self.reply, self.read = reply, read
        self.requests: list[bytes] = []
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            self.connections += 1
            with conn:
                data = b""
                while self.read and b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(data)
                if self.reply == b"":
                    time.sleep(3)  # hold the connection open without answering
                elif self.reply:
                    conn.sendall(self.reply)

    def close(self):
        self.sock.close()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.lower(), raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.delenv("REQUEST_METHOD", raising=False)  # urllib ignores HTTP_PROXY under CGI
    hub_reachable.cache_clear()
    yield
    hub_reachable.cache_clear()


@pytest.fixture
def proxy():
    server = FakeServer()
    yield server
    server.close()


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]  # nothing listens there once closed


def test_hub_reachable__through_https_proxy(monkeypatch, proxy):
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    assert hub_reachable() is True
    assert proxy.requests[0].startswith(b"CONNECT huggingface.co:443 HTTP/1.1\r\n")
    assert hub_reachable() is True and proxy.connections == 1  # cached for the process


def test_hub_reachable__lowercase_variable_and_credentials(monkeypatch, proxy):
    monkeypatch.setenv("https_proxy", f"http://alice:p%40ss@127.0.0.1:{proxy.port}")
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.org:8443")
    assert hub_reachable() is True
    request = proxy.requests[0]
    assert request.startswith(b"CONNECT hub.example.org:8443 HTTP/1.1\r\n")
    token = base64.b64encode(b"alice:p@ss")
    assert b"Proxy-Authorization: Basic " + token in request


def test_hub_reachable__http_endpoint_uses_http_proxy(monkeypatch, proxy):
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{closed_port()}")  # would fail if used
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.example.org")
    assert hub_reachable() is True
    assert proxy.requests[0].startswith(b"CONNECT mirror.example.org:80 ")


def test_hub_reachable__proxy_refuses_the_tunnel(monkeypatch):
    denied = FakeServer(reply=b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
    try:
        monkeypatch.setenv("HTTPS_PROXY", denied.url)
        assert hub_reachable() is False and denied.connections == 1
    finally:
        denied.close()


def test_hub_reachable__no_proxy_goes_direct(monkeypatch, proxy):
    hub = FakeServer(reply=None, read=False)  # the "Hub", on a local port
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"https://127.0.0.1:{hub.port}")
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
        assert hub_reachable() is True
        time.sleep(0.05)  # let the server thread count the connection
        assert hub.connections == 1 and proxy.connections == 0
        # without NO_PROXY the same endpoint is asked of the proxy
        monkeypatch.delenv("NO_PROXY")
        hub_reachable.cache_clear()
        assert hub_reachable() is True
        assert proxy.requests[0].startswith(f"CONNECT 127.0.0.1:{hub.port} ".encode()) and hub.connections == 1
    finally:
        hub.close()


def test_hub_reachable__unreachable_proxy_is_false_quickly(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{closed_port()}")
    start = time.monotonic()
    assert hub_reachable() is False
    assert time.monotonic() - start < 1.0
    # a proxy that accepts but never answers: False once the timeout is spent, not later
    silent = FakeServer(reply=b"")
    try:
        monkeypatch.setenv("HTTPS_PROXY", silent.url)
        hub_reachable.cache_clear()
        start = time.monotonic()
        assert hub_reachable(timeout=0.3) is False
        assert time.monotonic() - start < 1.5
    finally:
        silent.close()


def test_hub_reachable__direct_without_proxy(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"https://127.0.0.1:{closed_port()}")
    assert hub_reachable() is False
    hub = FakeServer(reply=None, read=False)
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"https://127.0.0.1:{hub.port}")
        hub_reachable.cache_clear()
        assert hub_reachable() is True
    finally:
        hub.close()
