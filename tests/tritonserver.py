"""A real NVIDIA Triton server for tests and benchmarks, from the ``nvidia-pytriton`` wheel.

The wheel ships ``tritonserver`` (2.51) with the Python backend only, and pins numpy<2, so it
lives in its own environment (``.venv-triton``, made by ``make install-triton-test``). The
model repository it serves is generated from a polyhead model version's manifest: the same
inputs, outputs and batching as the production ``config.pbtxt``, but ``backend: "python"`` with
``tests/triton_python_model/model.py`` running the same ``model.onnx`` with ONNX Runtime.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from serving.manifest import Manifest
from serving.manifest.triton_config import config_from_manifest, to_pbtxt
from tests.gateway import ROOT, free_port

TRITON_VENV = Path(os.environ.get("POLYHEAD_TEST_TRITON_VENV", ROOT / ".venv-triton"))
MODEL_PY = ROOT / "tests" / "triton_python_model" / "model.py"


def _venv_facts() -> tuple[Path, Path, str]:
    """(site-packages, python, LIBDIR) of the Triton environment; a clear error if missing."""
    python = TRITON_VENV / "bin" / "python"
    if not python.exists():
        raise RuntimeError(
            f"no Triton test environment at {TRITON_VENV}: run `make install-triton-test` "
            "(part of `make test`)"
        )
    out = subprocess.run(
        [
            str(python),
            "-c",
            "import sysconfig, pytriton, os; print(os.path.dirname(os.path.dirname("
            "pytriton.__file__))); print(sysconfig.get_config_var('LIBDIR'))",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    return Path(out[0]), python, out[1]


def build_repository(
    model_version_dir: Path, dest: Path, tensorrt_precision: str | None = None
) -> str:
    """A Python-backend Triton repository for one polyhead model version; returns its name.

    The config is the production one (warm-up included, TensorRT if asked) but for the backend.
    """
    manifest = Manifest.load(model_version_dir / "manifest.json")
    config = config_from_manifest(
        manifest, instance_kind="KIND_CPU", tensorrt_precision=tensorrt_precision
    )
    text = to_pbtxt(config)
    text = text.replace('platform: "onnxruntime_onnx"', 'backend: "python"')
    model_dir = dest / manifest.name
    version_dir = model_dir / str(manifest.version)
    version_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(text)
    shutil.copy(MODEL_PY, version_dir / "model.py")
    shutil.copy(model_version_dir / "model.onnx", version_dir / "model.onnx")
    return manifest.name


@dataclass
class Triton:
    """A running tritonserver: its ports, and how to stop and start it again."""

    repo: Path
    workdir: Path
    http_port: int
    grpc_port: int
    metrics_port: int
    ort_threads: int = 1
    proc: subprocess.Popen[bytes] | None = None

    @property
    def grpc_url(self) -> str:
        """host:port for tritonclient.grpc."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        """host:port for tritonclient.http."""
        return f"127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 60.0) -> None:
        """Start (or restart) the server on the same ports and wait until it is ready."""
        site, python, libdir = _venv_facts()
        server = site / "pytriton" / "tritonserver"
        backends = self.workdir / "backends"
        if not backends.exists():
            shutil.copytree(server / "backends", backends)
            shutil.copy(
                server / "python_backend_stubs" / "3.11" / "triton_python_backend_stub",
                backends / "python" / "triton_python_backend_stub",
            )
        env = dict(os.environ)
        libs = [str(site / "nvidia_pytriton.libs"), libdir]
        env["LD_LIBRARY_PATH"] = os.pathsep.join([*libs, env.get("LD_LIBRARY_PATH", "")])
        env["PATH"] = os.pathsep.join([str(python.parent), env.get("PATH", "")])
        env["VIRTUAL_ENV"] = str(TRITON_VENV)
        env["POLYHEAD_TEST_ORT_THREADS"] = str(self.ort_threads)
        env.pop("PYTHONPATH", None)
        log = (self.workdir / "tritonserver.log").open("ab")
        self.proc = subprocess.Popen(
            [
                str(server / "bin" / "tritonserver"),
                f"--model-repository={self.repo}",
                f"--backend-directory={backends}",
                f"--http-port={self.http_port}",
                f"--grpc-port={self.grpc_port}",
                f"--metrics-port={self.metrics_port}",
                "--http-address=127.0.0.1",
                "--grpc-address=127.0.0.1",
                "--allow-metrics=false",
                "--exit-timeout-secs=2",
                "--log-verbose=0",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its Python-backend stubs are its children: one group
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"tritonserver exited with {self.proc.returncode}:\n{self.log()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(f"http://{self.http_url}/v2/health/ready", timeout=1)
                if r.status_code == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"tritonserver not ready after {timeout}s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL the server and its stubs (a crash, not a shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        """Graceful stop (SIGTERM, 2 s exit timeout), then kill whatever is left."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None

    def log(self) -> str:
        """The server's output so far (last 4000 characters)."""
        path = self.workdir / "tritonserver.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@contextlib.contextmanager
def triton_server(model_version_dirs: list[Path], ort_threads: int = 1) -> Iterator[Triton]:
    """Start a Triton serving the given polyhead model versions on free loopback ports."""
    with tempfile.TemporaryDirectory(prefix="polyhead-triton-") as tmp:
        work = Path(tmp)
        repo = work / "repo"
        for d in model_version_dirs:
            build_repository(d, repo)
        triton = Triton(repo, work, free_port(), free_port(), free_port(), ort_threads)
        triton.start()
        try:
            yield triton
        finally:
            triton.stop()
