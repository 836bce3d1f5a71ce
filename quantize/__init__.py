"""quantize: every write to disk (HF -> GGUF conversion, llama.cpp quantization, measurement).

Public functions are loaded lazily so that `import quantize` stays cheap for the planner CLI.
"""

_EXPORTS = {
    "convert_hf_to_gguf": "quantize.convert",
    "plan_conversion": "quantize.convert",
    "quantize_gguf": "quantize.llamacpp",
    "load_and_measure": "quantize.llamacpp",
    "parse_llama_log": "quantize.llamacpp",
    "Measured": "quantize.llamacpp",
    "build_tiny_model": "quantize.tiny",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'quantize' has no attribute {name!r}")
