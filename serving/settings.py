"""Server settings: environment variables (prefix ``POLYHEAD_``) and an optional file.

Built by the app factory (``Settings()`` reads the environment then), never at import time.
Unsafe or impossible values are refused with a message naming the setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the gateway can be told; each component gets only its part."""

    model_config = SettingsConfigDict(
        env_prefix="POLYHEAD_",
        env_file=None,
        extra="ignore",
        frozen=True,
    )

    repo: Path = Path("model_repo")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # KServe v2 gRPC on a second port (None: HTTP only; 0: any free port)
    grpc_port: int | None = Field(None, ge=0, le=65535)

    # where the forward pass runs: in process (ONNX Runtime) or on a Triton server
    backend: Literal["onnxruntime", "triton"] = "onnxruntime"
    triton_url: str = "127.0.0.1:8001"  # host:port of Triton's gRPC (or HTTP) endpoint
    triton_protocol: Literal["grpc", "http"] = "grpc"
    triton_timeout_s: float = Field(10.0, gt=0.0, le=600.0)  # every call to Triton
    # Who batches with the Triton backend: "gateway" (our micro-batcher, then one Triton call
    # per batch) or "triton" (one Triton call per request; Triton's dynamic batcher merges).
    triton_batching: Literal["gateway", "triton"] = "gateway"
    # per-model override of ``backend``, e.g. POLYHEAD_MODEL_BACKENDS='{"scenes": "triton"}'
    model_backends: dict[str, Literal["onnxruntime", "triton"]] = Field(default_factory=dict)

    # dynamic batching
    max_batch_size: int = Field(8, ge=1, le=1024)
    max_queue_delay_ms: float = Field(2.0, ge=0.0, le=1000.0)
    max_queue_size: int = Field(64, ge=1, le=100_000)

    # ONNX Runtime
    providers: list[str] = Field(
        default_factory=lambda: [
            "TensorrtExecutionProvider",
            "CUDAExecutionProvider",
            "CPUExecutionProvider",
        ]
    )
    intra_op_threads: int = Field(0, ge=0, le=256)

    # model repository
    reload_interval_s: float = Field(2.0, ge=0.0)  # 0 disables hot reload
    max_versions: int = Field(2, ge=1, le=100)  # newest versions kept loaded per model
    # Triton's model control modes: poll (hot reload every reload_interval_s), none (load once
    # at start), explicit (load/unload through POST /v2/repository/models/NAME/load|unload;
    # only load_models are loaded at start, '["*"]' for every model: Triton's --load-model)
    model_control_mode: Literal["poll", "none", "explicit"] = "poll"
    load_models: list[str] = Field(default_factory=list)

    # requests
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    # request line and headers together (431 beyond it, before the app sees the request)
    max_header_bytes: int = Field(16 * 1024, ge=1024, le=1024 * 1024)
    max_image_pixels: int = Field(40_000_000, ge=64)
    min_image_side: int = Field(8, ge=1)
    max_images_per_request: int = Field(64, ge=1)
    # the output budget: a response that would be larger is refused (413) before decoding
    max_response_bytes: int = Field(64 * 1024 * 1024, ge=64 * 1024, le=4 * 1024**3)
    api_keys: list[SecretStr] = Field(default_factory=list)
    # v2 tensor inputs with NaN or infinities: passed to the model as sent (Triton's way; the
    # response counts them in its parameter nonfinite_input_values), or refused with a 400
    reject_nonfinite_tensors: bool = False

    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("providers")
    @classmethod
    def _providers_known(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one execution provider is needed")
        bad = [p for p in v if not p.endswith("ExecutionProvider")]
        if bad:
            raise ValueError(f"not ONNX Runtime provider names: {bad}")
        return v

    @field_validator("api_keys")
    @classmethod
    def _keys_long_enough(cls, v: list[SecretStr]) -> list[SecretStr]:
        if any(len(k.get_secret_value()) < 16 for k in v):
            raise ValueError("every API key must be at least 16 characters")
        return v


def load_settings(env_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, an optional env file, then explicit overrides."""
    return Settings(_env_file=env_file, **overrides)
