"""Errors raised while writing artifacts. All are PlanError subclasses, so the CLI maps them to a
one-line message with a hint like every other domain error."""

from planner.errors import BackendUnavailableError, PlanError, UnsupportedArchitectureError
from planner.outputs import OutputExistsError  # one class for every writer

__all__ = [
    "BackendUnavailableError",
    "ConversionError",
    "InsufficientDiskError",
    "OutputExistsError",
    "QuantizationError",
    "UnsafeCheckpointError",
    "UnsupportedArchitectureError",
]


class ConversionError(PlanError):
    hint = "check that the directory is a complete Hugging Face checkpoint (config.json, *.safetensors, tokenizer)"


class UnsafeCheckpointError(ConversionError):
    hint = "convert the checkpoint to safetensors first; pickle (.bin) files can run code when loaded"


class InsufficientDiskError(PlanError):
    hint = "free some disk space or choose an output directory on another disk"


class QuantizationError(PlanError):
    hint = "check the input GGUF loads in llama.cpp and that the file type is one llama.cpp knows"
