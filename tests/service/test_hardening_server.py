"""Issue 12 against a real `sam2-service serve` on 127.0.0.1: slow clients, the connection cap, WebSocket message
size, and logs that keep ERROR for our own failures."""

from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest
from websockets.sync.client import connect

from service.track_sessions import encode_raw_frame
from tests.serve_process import ServeProcess

from .conftest import IMAGE_SIZE

CAP = 6


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("hardening") / "server.log"
    proc = ServeProcess(log, ["--weights", "random", "--image-size", IMAGE_SIZE, "--dtype", "fp32", "--device", "cpu"],
                        env={"SAM2_WARMUP": "false", "SAM2_HEADER_TIMEOUT": "2", "SAM2_BODY_TIMEOUT": "1",
                             "SAM2_MAX_CONNECTIONS": str(CAP)})
    yield proc
    proc.stop()


def open_socket(proc, first: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", proc.port), timeout=10)
    s.sendall(first)
    return s


def closed_by_server(s: socket.socket) -> bool:
    try:
        return s.recv(4096) == b""
    except ConnectionResetError:
        return True


def http_get(proc, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return s.recv(4096)


def test_connections_over_the_cap_get_503_and_slow_headers_are_closed(server):
    slow = [open_socket(server, b"POST /v1/seg") for _ in range(CAP)]  # 12 bytes, then nothing
    try:
        time.sleep(0.3)
        assert http_get(server, "/healthz").startswith(b"HTTP/1.1 503"), "the cap did not hold"
        t0 = time.monotonic()
        assert all(closed_by_server(s) for s in slow)
        assert time.monotonic() - t0 < 6
    finally:
        for s in slow:
            s.close()
    time.sleep(0.3)
    assert http_get(server, "/healthz").startswith(b"HTTP/1.1 200")


def test_a_body_that_stops_is_answered_408(server):
    head = b"POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    with open_socket(server, head + b'{"objects"') as s:
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]


def test_a_raw_frame_over_16_mib_is_taken(server):
    frame = np.zeros((2400, 2400, 3), np.uint8)  # 17.3 MB raw: under the pixel limit, over uvicorn's default
    with connect(server.ws_url.replace("http", "ws"), max_size=None, open_timeout=30) as ws:
        ws.send(json.dumps({"type": "start"}))
        assert json.loads(ws.recv(timeout=30))["type"] == "session"
        ws.send(encode_raw_frame(frame))
        assert json.loads(ws.recv(timeout=120))["type"] == "masks"


def test_client_mistakes_log_no_error_and_no_traceback(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        body = b'{"image": "%%%", "objects": [1]}'
        s.sendall(b"POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
                  + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        assert s.recv(4096).startswith(b"HTTP/1.1 422")
    with connect(server.ws_url, open_timeout=30) as ws:
        for bad in ['{"type": "start", "model": [1]}', '{"type": "remove_object", "obj_id": [1]}', "nope"]:
            ws.send(bad)
            assert json.loads(ws.recv(timeout=30))["type"] == "error"
    text = server.log.read_text()
    assert "Traceback" not in text and "ERROR" not in text, text[-3000:]
