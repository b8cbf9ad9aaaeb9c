"""A real nginx reverse proxy for tests: 127.0.0.1, a free port, a temporary directory."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from local_binaries import find_binary, free_port

_CANDIDATES = ("/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx")
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0


def find_nginx() -> str | None:
    """Return the path of `nginx`, or None when it is not installed."""
    return find_binary("nginx", _CANDIDATES)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def render_config(
    *,
    directory: Path,
    port: int,
    upstream_port: int,
    keepalive_timeout: float = 2.0,
    read_timeout: float = 3.0,
    gzip: bool = True,
    resend_non_idempotent: bool = False,
    refuse_one_in: int | None = None,
) -> str:
    """
    Return an nginx.conf that proxies 127.0.0.1:*port* to 127.0.0.1:*upstream_port*.

    The settings mirror a common production front: client keep-alive of a few seconds, upstream
    keep-alive connections, a read timeout shorter than the SDK's, and gzip on XML replies.
    `resend_non_idempotent` turns on the setting that makes nginx itself resend a POST to the
    next upstream after an error (`proxy_next_upstream ... non_idempotent`).
    `refuse_one_in=n` sends one request in *n* to a closed port, so nginx answers it 502 without
    forwarding it (a proxy that refuses a pay the gateway never saw).
    """
    user = "user root;" if os.geteuid() == 0 else ""
    next_upstream = (
        "proxy_next_upstream error timeout http_502 non_idempotent;\n"
        "            proxy_next_upstream_tries 2;"
        if resend_non_idempotent
        else "proxy_next_upstream off;"
    )
    # With resend on, the upstream is listed twice so nginx has a "next" server to try.
    servers = f"server 127.0.0.1:{upstream_port} max_fails=0;"
    if resend_non_idempotent:
        servers += f"\n        server 127.0.0.1:{upstream_port} max_fails=0;"
    if refuse_one_in is not None:
        servers = (
            f"server 127.0.0.1:{upstream_port} max_fails=0 weight={refuse_one_in - 1};\n"
            f"        server 127.0.0.1:{free_port()} max_fails=0 weight=1;"
        )
    return f"""
{user}
daemon off;
master_process on;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format timing '$msec $request_time $status $request_uri';
    access_log {directory}/access.log timing;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    upstream gateway {{
        {servers}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        keepalive_timeout {keepalive_timeout:g}s;
        location / {{
            proxy_pass http://gateway;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_send_timeout {read_timeout:g}s;
            proxy_read_timeout {read_timeout:g}s;
            {next_upstream}
            gzip {"on" if gzip else "off"};
            gzip_types application/xml text/xml;
            gzip_min_length 0;
        }}
    }}
}}
"""


class NginxProxy:
    """One nginx process in front of an upstream; use `NginxProxy.running()` as a context."""

    def __init__(self, binary: str, directory: Path, port: int) -> None:
        self.binary = binary
        self.directory = directory
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """The proxy's URL, for the SDK's `base_url`."""
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    @contextlib.contextmanager
    def running(
        cls,
        upstream_port: int,
        *,
        keepalive_timeout: float = 2.0,
        read_timeout: float = 3.0,
        gzip: bool = True,
        resend_non_idempotent: bool = False,
        refuse_one_in: int | None = None,
    ) -> Iterator[NginxProxy]:
        """
        Start nginx in front of 127.0.0.1:*upstream_port*; skip the test when it is missing.

        Yields:
            The running proxy; it is stopped (and its directory removed) on exit.
        """
        binary = find_nginx()
        if binary is None:
            pytest.skip("nginx is not installed (make nginx installs Debian's package)")
        with tempfile.TemporaryDirectory(prefix="freedompay-nginx-") as tmp:
            directory = Path(tmp)
            proxy = cls(binary, directory, free_port())
            (directory / "nginx.conf").write_text(
                render_config(
                    directory=directory,
                    port=proxy.port,
                    upstream_port=upstream_port,
                    keepalive_timeout=keepalive_timeout,
                    read_timeout=read_timeout,
                    gzip=gzip,
                    resend_non_idempotent=resend_non_idempotent,
                    refuse_one_in=refuse_one_in,
                )
            )
            proxy.start()
            try:
                yield proxy
            finally:
                proxy.stop()

    def start(self) -> None:
        """Start nginx and wait until it accepts connections."""
        self.process = subprocess.Popen(  # noqa: S603 - a binary found on this machine
            [self.binary, "-c", str(self.directory / "nginx.conf"), "-p", str(self.directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while not _listening(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.directory / "error.log").read_text(errors="replace")
                self.stop()
                pytest.fail(f"nginx did not start on port {self.port}: {log[-2000:]}")
            time.sleep(0.02)

    def requests(self) -> list[tuple[float, float, int, str]]:
        """
        Return the requests nginx has answered so far, from its access log.

        Returns:
            (started, finished, status, path) per request, times as wall-clock seconds.
        """
        log = self.directory / "access.log"
        if not log.exists():
            return []
        rows = []
        for line in log.read_text().splitlines():
            finished, took, status, path = line.split(" ", 3)
            rows.append((float(finished) - float(took), float(finished), int(status), path))
        return rows

    def stop(self) -> None:
        """Stop nginx (quickly) and wait for it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=_STOP_TIMEOUT)
        self.process = None
