"""Finding a Debian server binary and a free loopback port, for tests that start real servers."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterable


def find_binary(name: str, candidates: Iterable[str]) -> str | None:
    """Return the path of *name* on PATH, else the first executable candidate, else None."""
    found = shutil.which(name)
    if found:
        return found
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
