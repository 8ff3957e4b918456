"""A real OpenAI-compatible server as a child process, for the completions backend's server tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Iterator, Sequence


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(cmd: Sequence[str], port: int, log: Path, *, startup_s: float = 180.0) -> Iterator[str]:
    """Run ``cmd`` (a server listening on 127.0.0.1:``port``), wait until ``/v1/models`` answers, yield the
    ``/v1`` base URL, stop it on exit. A server that exits or never answers raises with its log's tail."""
    proc = subprocess.Popen(list(cmd), stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            try:
                urllib.request.urlopen(url + "/models", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"{cmd[0]} exited: {log.read_text()[-2000:]}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{cmd[0]} did not answer in {startup_s:.0f} s: {log.read_text()[-2000:]}") \
                        from None
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
