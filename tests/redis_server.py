"""A real `redis-server` for tests: 127.0.0.1, a free port, a temporary directory, no saving."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from local_binaries import find_binary, free_port

#: Where Debian and common installs put the binary when it is not on PATH.
_CANDIDATES = ("/usr/bin/redis-server", "/usr/sbin/redis-server", "/usr/local/bin/redis-server")
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0


def find_redis_server() -> str | None:
    """Return the path of `redis-server`, or None when it is not installed."""
    return find_binary("redis-server", _CANDIDATES)


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One `redis-server` process; use `RedisServer.running()` as a context manager."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's URL, database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start on a free port and wait (bounded) until it answers PING."""
        last_error = "did not start"
        for _ in range(3):  # a free port can be taken between the probe and the bind
            self.port = free_port()
            log = (self.directory / f"redis-{self.port}.log").open("wb")
            with log:
                self.process = subprocess.Popen(  # noqa: S603 - fixed arguments, no shell
                    [
                        self.binary,
                        "--bind",
                        "127.0.0.1",
                        "--port",
                        str(self.port),
                        "--dir",
                        str(self.directory),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--daemonize",
                        "no",
                        "--protected-mode",
                        "yes",
                        "--loglevel",
                        "warning",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.directory,
                )
            deadline = time.monotonic() + _START_TIMEOUT
            while time.monotonic() < deadline and self.process.poll() is None:
                if _ping(self.port):
                    return
                time.sleep(0.05)
            last_error = (self.directory / f"redis-{self.port}.log").read_text(errors="replace")
            self.stop()
        raise RuntimeError(f"redis-server did not start: {last_error[-500:]}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after a bounded wait)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=_STOP_TIMEOUT)

    @classmethod
    @contextlib.contextmanager
    def running(cls) -> Iterator[RedisServer]:
        """Start a server for the block, or skip the test when `redis-server` is not installed."""
        binary = find_redis_server()
        if binary is None:
            pytest.skip(
                "redis-server is not installed (Debian: apt-get install -y redis-server; "
                "make test installs it when missing)"
            )
        with tempfile.TemporaryDirectory(prefix="freedompay-redis-") as directory:
            server = cls(binary, Path(directory))
            server.start()
            try:
                yield server
            finally:
                server.stop()
