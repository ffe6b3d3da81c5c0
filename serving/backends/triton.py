"""Triton backend: the forward pass runs on an NVIDIA Triton server, reached with tritonclient.

Pre- and post-processing stay in the gateway; only tensors cross the network, in binary (gRPC
raw contents by default, or HTTP's binary tensor extension). Every call has a deadline. A
watcher polls Triton's model readiness once a second, so the gateway's readiness follows
Triton's; a call that finds Triton unreachable fails at once with a 503 and marks the model not
ready until the watcher sees it back. The gRPC channel reconnects by itself with a short backoff
(the HTTP client opens connections per need), so a restarted Triton is picked up without
restarting the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import numpy as np

from serving.backends.base import TensorInfo
from serving.errors import BackendError, BackendUnavailable, BadRequest
from serving.manifest import Manifest
from serving.settings import Settings

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 1.0
# Reconnect quickly after Triton comes back (gRPC's default backoff grows to 2 minutes).
_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", 1 << 30),
    ("grpc.max_receive_message_length", 1 << 30),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
# Triton's gRPC status codes that mean "the server cannot take this call now".
_UNAVAILABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "UNKNOWN", "ABORTED")


def _shape(dims: Any) -> tuple[int | None, ...]:
    return tuple(None if int(d) < 0 else int(d) for d in dims)


class TritonBackend:
    """One model version served by a Triton server."""

    def __init__(
        self,
        manifest: Manifest,
        url: str,
        protocol: str,
        timeout_s: float,
        inputs: list[TensorInfo],
        outputs: list[TensorInfo],
        batches_itself: bool,
    ) -> None:
        """Use :meth:`connect`, which reads and checks the model's metadata first."""
        self.model = manifest.name
        self.version = str(manifest.version)
        self.url = url
        self.protocol = protocol
        self.timeout_s = timeout_s
        self._inputs = inputs
        self._outputs = outputs
        self.batches_itself = batches_itself  # the repository skips its micro-batcher then
        self._client: Any = None
        self._ready = True  # metadata was just read from a ready model
        self._watcher: asyncio.Task[None] | None = None
        self._closed = False

    # ---- construction ------------------------------------------------------------------

    @classmethod
    def connect(cls, manifest: Manifest, settings: Settings) -> TritonBackend:
        """Read the model's metadata from Triton (called off the event loop, at load)."""
        protocol, url = settings.triton_protocol, settings.triton_url
        timeout = settings.triton_timeout_s
        inputs, outputs = asyncio.run(
            _metadata(protocol, url, manifest.name, str(manifest.version), timeout)
        )
        return cls(
            manifest,
            url,
            protocol,
            timeout,
            inputs,
            outputs,
            batches_itself=settings.triton_batching == "triton",
        )

    # ---- Backend protocol --------------------------------------------------------------

    @property
    def inputs(self) -> list[TensorInfo]:
        """Inputs as Triton reports them."""
        return self._inputs

    @property
    def outputs(self) -> list[TensorInfo]:
        """Outputs as Triton reports them."""
        return self._outputs

    @property
    def device(self) -> str:
        """Where the model runs."""
        return f"triton {self.protocol}://{self.url}"

    def ready(self) -> bool:
        """Triton's model readiness as last seen (by the watcher or the last call)."""
        return self._ready and not self._closed

    async def infer(
        self, batch: dict[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        """One forward pass on Triton, binary tensors both ways, under a deadline."""
        client = self._ensure_client()
        try:
            result = await asyncio.wait_for(
                self._infer(client, batch, outputs), timeout=self.timeout_s
            )
        except TimeoutError:
            self._ready = False
            raise BackendUnavailable(
                f"Triton at {self.url} did not answer within {self.timeout_s:g} s"
            ) from None
        except Exception as e:
            raise self._translate(e) from e
        self._ready = True
        return result

    async def close(self) -> None:
        """Stop the watcher and close the connection."""
        self._closed = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()
            self._client = None

    # ---- internals ---------------------------------------------------------------------

    def _ensure_client(self) -> Any:
        """The async client, made on the event loop at first use, with its watcher."""
        if self._client is None:
            self._client = _client(self.protocol, self.url, self.timeout_s)
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(
                self._watch(), name=f"triton-watch-{self.model}"
            )
        return self._client

    async def _infer(
        self, client: Any, batch: dict[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        if self.protocol == "grpc":
            import tritonclient.grpc as grpcclient

            inputs = []
            for name, array in batch.items():
                i = grpcclient.InferInput(name, list(array.shape), "FP32")
                i.set_data_from_numpy(np.ascontiguousarray(array, dtype=np.float32))
                inputs.append(i)
            wanted = [grpcclient.InferRequestedOutput(n) for n in outputs]
            result = await client.infer(
                self.model,
                inputs,
                model_version=self.version,
                outputs=wanted,
                client_timeout=self.timeout_s,
            )
        else:
            import tritonclient.http as httpclient

            inputs = []
            for name, array in batch.items():
                h = httpclient.InferInput(name, list(array.shape), "FP32")
                h.set_data_from_numpy(
                    np.ascontiguousarray(array, dtype=np.float32), binary_data=True
                )
                inputs.append(h)
            wanted = [httpclient.InferRequestedOutput(n, binary_data=True) for n in outputs]
            result = await client.infer(
                self.model, inputs, model_version=self.version, outputs=wanted
            )
        out = {}
        for n in outputs:
            array = result.as_numpy(n)
            if array is None:
                raise BackendError(f"Triton returned no output {n!r}")
            out[n] = array
        return out

    def _translate(self, e: Exception) -> Exception:
        """Triton and transport errors as gateway errors (503 when Triton is unreachable)."""
        from tritonclient.utils import InferenceServerException

        if isinstance(e, BackendError | BackendUnavailable | BadRequest):
            return e
        if isinstance(e, InferenceServerException):
            status = str(e.status() or "")
            message = e.message() or str(e)
            if any(s in status for s in _UNAVAILABLE) or "unavailable" in message.lower():
                self._ready = False
                return BackendUnavailable(f"Triton at {self.url} is unavailable: {message}")
            if "not ready" in message.lower() or "unknown model" in message.lower():
                self._ready = False
                return BackendUnavailable(f"Triton cannot serve {self.model}: {message}")
            return BackendError(f"Triton failed: {status} {message}".strip())
        if isinstance(e, OSError | ConnectionError) or type(e).__module__.startswith("aiohttp"):
            self._ready = False
            return BackendUnavailable(f"Triton at {self.url} is unreachable: {e}")
        return BackendError(f"Triton call failed: {type(e).__name__}: {e}")

    async def _watch(self) -> None:
        """Follow Triton's readiness of this model version."""
        while not self._closed:
            await asyncio.sleep(WATCH_INTERVAL_S)
            client = self._client
            if client is None:
                continue
            try:
                ready = await asyncio.wait_for(
                    client.is_model_ready(self.model, self.version),
                    timeout=min(self.timeout_s, 2.0),
                )
            except Exception:  # unreachable, timed out: not ready, keep watching
                ready = False
            if ready != self._ready:
                log.warning(
                    "Triton model %s version %s is %s",
                    self.model,
                    self.version,
                    "ready again" if ready else "NOT ready",
                )
            self._ready = bool(ready)


def _client(protocol: str, url: str, timeout_s: float) -> Any:
    if protocol == "grpc":
        import tritonclient.grpc.aio as grpc_aio

        return grpc_aio.InferenceServerClient(url, channel_args=_CHANNEL_ARGS)
    import tritonclient.http.aio as http_aio

    return http_aio.InferenceServerClient(url, conn_timeout=timeout_s)


async def _metadata(
    protocol: str, url: str, model: str, version: str, timeout_s: float
) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Inputs and outputs of a ready model on Triton; BackendUnavailable when it is not."""
    client = _client(protocol, url, timeout_s)
    try:
        try:
            ready = await asyncio.wait_for(client.is_model_ready(model, version), timeout_s)
            if not ready:
                raise BackendUnavailable(
                    f"Triton at {url} has no ready model {model!r} version {version}"
                )
            meta = await asyncio.wait_for(
                client.get_model_metadata(model, version, as_json=True)
                if protocol == "grpc"
                else client.get_model_metadata(model, version),
                timeout_s,
            )
        except BackendUnavailable:
            raise
        except Exception as e:
            raise BackendUnavailable(
                f"cannot read {model!r} version {version} from Triton at {url}: {e}"
            ) from e
    finally:
        with contextlib.suppress(Exception):
            await client.close()

    def info(entries: list[dict[str, Any]]) -> list[TensorInfo]:
        return [TensorInfo(e["name"], e["datatype"], _shape(e["shape"])) for e in entries]

    return info(meta.get("inputs", [])), info(meta.get("outputs", []))
