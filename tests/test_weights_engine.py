"""Planned weight bytes against what our converter and llama.cpp's quantizer really write."""

import pytest

from planner.formats import gguf_tensor_types, parse_format, weight_bytes
from planner.sources import load_model

FAMILIES = ["gemma2", "gemma3_text", "gemma3", "gemma4_text", "gemma4_e", "gemma4_moe"]


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("ftype", ["F32", "Q8_0", "Q4_K_M", "Q3_K_M", "Q2_K"])
def test_planned_bytes_equal_quantized_file(tiny_model, tiny_gguf, llama_cpp_module, tmp_path, family, ftype):
    import gguf

    from quantize.llamacpp import quantize_gguf

    spec, _ = load_model(str(tiny_model(family)))  # the HF directory: config.json + safetensors headers
    src = tiny_gguf(family, outtype="f32")  # tiny checkpoints are float32, so the intermediate is F32
    out = src if ftype == "F32" else quantize_gguf(src, tmp_path / f"{family}-{ftype}.gguf", ftype)
    reader = gguf.GGUFReader(str(out))
    real = {t.name: (t.tensor_type.name, int(t.n_bytes)) for t in reader.tensors}
    planned = dict((t.name, typ) for t, typ in gguf_tensor_types(spec, ftype))
    assert set(planned) == set(real)
    assert {n: real[n][0] for n in real} == planned  # every tensor's type, as llama_tensor_get_type chose it
    assert weight_bytes(spec, parse_format(ftype, "llama.cpp")) == sum(b for _, b in real.values())
