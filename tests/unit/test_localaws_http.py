"""The local AWS server's HTTP/1.1 keep-alive request handler, against a small WSGI application."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from localaws.server import KeepAliveRequestHandler


@Request.application
def _app(request: Request) -> Any:
    if request.path == "/echo":
        return Response(request.get_data(), mimetype="text/plain")
    if request.path == "/ignore":  # leaves the request body unread
        return Response("ignored", mimetype="text/plain")
    if request.path == "/boom":
        raise RuntimeError("boom")
    if request.path == "/stream":  # no Content-Length
        return Response(iter([b"a", b"b"]), mimetype="text/plain")
    return Response("not found", status=404)


class _Handler(KeepAliveRequestHandler):
    timeout = 0.5


@pytest.fixture
def server() -> Iterator[BaseWSGIServer]:
    server = make_server("127.0.0.1", 0, _app, threaded=True, request_handler=_Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _connection(server: BaseWSGIServer) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=5)


def _request(
    connection: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None
) -> tuple[int, str | None, bytes]:
    connection.request(method, path, body=body)
    response = connection.getresponse()
    return response.status, response.getheader("Connection"), response.read()


def test_a_connection_serves_request_after_request(server: BaseWSGIServer) -> None:
    connection = _connection(server)
    assert _request(connection, "POST", "/echo", b"one") == (200, None, b"one")
    sock = connection.sock
    assert _request(connection, "POST", "/ignore", b"x" * 200_000) == (200, None, b"ignored")
    assert _request(connection, "GET", "/nothing") == (404, None, b"not found")
    assert _request(connection, "POST", "/echo", b"two") == (200, None, b"two")
    assert connection.sock is sock
    connection.close()


def _read_response(stream: Any) -> tuple[bytes, bytes]:
    """(status line, body) of the next response on `stream` (Content-Length framing)."""
    status = stream.readline().strip()
    length = 0
    while (line := stream.readline().strip()) != b"":
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, stream.read(length)


def test_pipelined_requests_are_answered_in_order(server: BaseWSGIServer) -> None:
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as sock:
        requests = [b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n" + bytes([c]) for c in b"abc"]
        sock.sendall(b"".join(requests))
        stream = sock.makefile("rb")
        answers = [_read_response(stream) for _ in requests]
        assert answers == [(b"HTTP/1.1 200 OK", body) for body in (b"a", b"b", b"c")]


def test_what_werkzeug_would_close_is_still_closed(server: BaseWSGIServer) -> None:
    connection = _connection(server)
    status, header, body = _request(connection, "GET", "/boom")
    assert (status, header) == (500, "close")
    assert b"Internal Server Error" in body
    connection.close()
    connection = _connection(server)
    assert _request(connection, "GET", "/stream") == (200, "close", b"ab")
    connection.close()
    connection = _connection(server)
    connection.putrequest("POST", "/echo")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders(b"3\r\nabc\r\n0\r\n\r\n")
    response = connection.getresponse()
    assert (response.status, response.getheader("Connection"), response.read()) == (200, "close", b"abc")
    connection.close()
    connection = _connection(server)
    connection.request("GET", "/echo", headers={"Connection": "close"})
    response = connection.getresponse()
    assert (response.status, response.getheader("Connection")) == (200, "close")
    connection.close()


def test_an_idle_connection_is_closed_after_the_timeout(server: BaseWSGIServer) -> None:
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        response = http.client.HTTPResponse(sock, method="GET")
        response.begin()
        assert response.read() == b""
        started = time.monotonic()
        assert sock.recv(1) == b""  # the server closed it
        assert time.monotonic() - started < 4
