"""Start a real gateway on 127.0.0.1 for tests: a subprocess, or uvicorn in a thread."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(
    url: str,
    timeout: float = 60.0,
    proc: subprocess.Popen | None = None,
    path: str = "/v2/health/ready",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"gateway at {url} not ready after {timeout}s")


@contextlib.contextmanager
def gateway_process(repo: Path, **env: str) -> Iterator[str]:
    """``polyhead serve`` as a subprocess; yields its base URL."""
    with gateway_server(repo, **env) as (url, _):
        yield url


@contextlib.contextmanager
def gateway_server(
    repo: Path, ready: bool = True, **env: str
) -> Iterator[tuple[str, subprocess.Popen]]:
    """``polyhead serve`` as a subprocess; yields (base URL, process).

    Its log goes to a file (a pipe nobody reads would fill up and block the server).
    ``ready`` False only waits for liveness (for a gateway that starts without its backend).
    """
    port = free_port()
    environ = dict(os.environ)
    environ["PYTHONPATH"] = str(ROOT) + os.pathsep + environ.get("PYTHONPATH", "")
    environ.update({f"POLYHEAD_{k.upper()}": v for k, v in env.items()})
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "polyhead", "serve", "--repo", str(repo), "--port", str(port)],
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            try:
                wait_ready(url, proc=proc, path="/v2/health/ready" if ready else "/v2/health/live")
            except (RuntimeError, TimeoutError) as e:
                log.seek(0)
                raise RuntimeError(f"{e}\ngateway log:\n{log.read()[-4000:]}") from None
            yield url, proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextlib.contextmanager
def gateway_thread(app) -> Iterator[str]:
    """A uvicorn server for an app object (e.g. with a test backend), in a thread."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)
