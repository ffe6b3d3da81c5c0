"""ONNX Runtime backend: a local InferenceSession, run off the event loop.

Providers are tried in the configured order (default TensorRT, then CUDA, then CPU), keeping
those this onnxruntime build has; the provider actually chosen is read back from the session,
not assumed from what is available. On a GPU provider inputs and outputs go through I/O binding.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

from serving.backends.base import TensorInfo
from serving.errors import BackendError, BadRequest, ModelLoadError

log = logging.getLogger(__name__)

DEFAULT_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_GPU_PROVIDERS = {"TensorrtExecutionProvider", "CUDAExecutionProvider"}
_DTYPES = {
    "tensor(float)": "FP32",
    "tensor(float16)": "FP16",
    "tensor(uint8)": "UINT8",
    "tensor(int64)": "INT64",
}


def choose_providers(preferred: tuple[str, ...] | list[str]) -> list[str]:
    """The preferred providers this build offers, in order; CPU is always last resort."""
    available = set(ort.get_available_providers())
    chosen = [p for p in preferred if p in available]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def _info(args: list[ort.NodeArg]) -> list[TensorInfo]:
    return [
        TensorInfo(
            a.name,
            _DTYPES.get(a.type, a.type),
            tuple(d if isinstance(d, int) else None for d in a.shape),
        )
        for a in args
    ]


class OnnxRuntimeBackend:
    """One model file in one ONNX Runtime session."""

    def __init__(
        self,
        path: str | Path,
        providers: tuple[str, ...] | list[str] = DEFAULT_PROVIDERS,
        intra_op_threads: int = 0,
        allow_spinning: bool = False,
    ) -> None:
        """Load ``path``; ``intra_op_threads`` 0 lets ONNX Runtime choose.

        ``allow_spinning`` False stops idle intra-op threads from busy-waiting: in a gateway
        the same cores also parse requests and encode responses, and spinning threads starve
        them (measured: batching made throughput drop instead of rise).
        """
        options = ort.SessionOptions()
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if allow_spinning else "0"
        )
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=options, providers=choose_providers(providers)
            )
        except Exception as e:  # ORT raises its own pybind exception types
            raise ModelLoadError(f"ONNX Runtime cannot load {path}: {e}") from e
        self._device = self.session.get_providers()[0]
        self._binding = self._device in _GPU_PROVIDERS
        self._inputs = _info(self.session.get_inputs())
        self._outputs = _info(self.session.get_outputs())
        # One thread: a session already uses every core it was given; two concurrent runs
        # would only fight over them.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ort")
        self._closed = False
        log.info("loaded %s on %s", path, self._device)

    @property
    def inputs(self) -> list[TensorInfo]:
        """Inputs as the session reports them."""
        return self._inputs

    @property
    def outputs(self) -> list[TensorInfo]:
        """Outputs as the session reports them."""
        return self._outputs

    @property
    def device(self) -> str:
        """The execution provider the session actually uses."""
        return self._device

    def ready(self) -> bool:
        """Ready until closed."""
        return not self._closed

    def run(self, batch: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        """Synchronous forward pass (used from the executor and by benchmarks)."""
        try:
            if self._binding:
                binding = self.session.io_binding()
                for name, array in batch.items():
                    binding.bind_cpu_input(name, np.ascontiguousarray(array))
                for name in outputs:
                    binding.bind_output(name, "cuda")
                self.session.run_with_iobinding(binding)
                results = binding.copy_outputs_to_cpu()
            else:
                results = self.session.run(outputs, batch)
        except Exception as e:
            kind = type(e).__name__
            if kind in ("InvalidArgument", "InvalidGraph", "Fail") and "input" in str(e).lower():
                raise BadRequest(f"the model rejected the input: {e}") from e
            raise BackendError(f"ONNX Runtime failed: {kind}: {e}") from e
        return dict(zip(outputs, results, strict=True))

    async def infer(
        self, batch: dict[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        """Forward pass on the backend's own thread, so the event loop keeps serving."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.run, batch, outputs)

    async def close(self) -> None:
        """Stop accepting work; pending runs finish first."""
        self._closed = True
        self._executor.shutdown(wait=False)
