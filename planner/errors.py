"""Typed domain errors. The CLI maps each to a one-line message that names the next step."""


class PlanError(Exception):
    """Base class: anything the user can fix by changing the input."""

    hint: str = ""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        if hint:
            self.hint = hint


class UnknownModelError(PlanError):
    hint = "run `gemma-plan models` to list the catalog, or pass a local HF directory or a .gguf file"


class UnsupportedArchitectureError(PlanError):
    hint = "supported: gemma2, gemma3, gemma3_text, gemma3n, gemma4, gemma4_text"


class UnknownFormatError(PlanError):
    hint = "run `gemma-plan estimate --help` for the weight formats"


class InvalidSettingsError(PlanError):
    pass


class DoesNotFitError(PlanError):
    hint = "try a smaller model, a lower-bit --quant, a shorter --ctx, or a quantized --kv-type"


class BackendUnavailableError(PlanError):
    hint = "install the extra: pip install 'gemma-plan[gguf]'"
