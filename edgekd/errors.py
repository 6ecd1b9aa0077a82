"""Errors that tell the user what was wrong, where, and what to do."""

from __future__ import annotations


class EdgekdError(Exception):
    """Base error. ``where`` names the file/key/layer; ``hint`` says what to do."""

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None) -> None:
        self.message = message
        self.where = where
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class ConfigError(EdgekdError):
    """A profile, target or build file is wrong."""


class SourceError(EdgekdError):
    """A model or data source cannot be loaded."""


class ExportError(EdgekdError):
    """Export to ONNX failed or produced a model that does not match PyTorch."""


class BackendUnavailable(EdgekdError):
    """A backend's SDK or device is missing on this machine."""


class BuildError(EdgekdError):
    """A backend could not build or run an artifact."""


class PassError(EdgekdError):
    """A compression pass could not be applied."""
