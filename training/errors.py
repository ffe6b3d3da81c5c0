"""Errors raised by the training side, one base class with small subclasses."""


class PolyheadTrainingError(Exception):
    """Base class of every error the training side raises on purpose."""


class ConfigError(PolyheadTrainingError, ValueError):
    """A training configuration is invalid or inconsistent with its data."""


class RegistryError(PolyheadTrainingError, KeyError):
    """An unknown or duplicate name in a registry."""

    def __str__(self) -> str:
        # KeyError quotes its argument; a registry message reads better plain.
        return str(self.args[0]) if self.args else ""


class CheckpointError(PolyheadTrainingError):
    """A checkpoint or run directory is missing or unreadable."""


class ExportError(PolyheadTrainingError):
    """ONNX export, its checks or publishing failed."""


class OutputExistsError(PolyheadTrainingError, FileExistsError):
    """A folder to write already exists (and is not empty); ``overwrite`` replaces it."""
