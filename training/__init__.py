"""polyhead training: multi-task models in PyTorch, exported to ONNX for serving."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("polyhead")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+local"
