"""Inference backends behind one protocol (see ``serving.backends.base.Backend``)."""

from serving.backends.base import Backend, TensorInfo

__all__ = ["Backend", "TensorInfo"]
