"""Loopback ports: a free one, waiting for a listener, and a flood of bytes the way an attacker sends them."""

from __future__ import annotations

import socket
import time
from contextlib import suppress


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, *, deadline_s: float = 20.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {deadline_s} s")


def flood(port: int, path: str, size: int, *, token: str | None = None, chunked: bool = False) -> int:
    """POST `size` bytes to 127.0.0.1:`port` the way an attacker would: headers first, then the body as fast as the
    server takes it, until it answers or stops reading (5 s). Returns the status the server answered."""
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json"]
    head += [f"Authorization: Bearer {token}"] if token else []
    head += ["Transfer-Encoding: chunked"] if chunked else [f"Content-Length: {size}"]
    block = b"x" * (1 << 20)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        sent = 0
        with suppress(OSError):  # the server answered and closed, or stopped reading: both end the flood
            while sent < size:
                sock.sendall(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
                sent += len(block)
        sock.settimeout(10)
        answer = sock.recv(4096)
    return int(answer.split(b" ", 2)[1])
