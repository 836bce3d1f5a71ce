"""Real-width slices of catalog models: the exact widths (hidden size, heads, FFN, experts, 262k vocabulary)
with only a few layers, as an HF text config, a planner ModelSpec, and a GGUF llama.cpp loads.

The GGUF is written directly in the file type asked for (the planner's own per-tensor type mix,
``planner.formats.gguf_tensor_types``, checked exact against llama-quantize), with zero weights: the
tensor data is left as holes of a sparse file, so writing a slice of any width takes a second and no
disk. All-zero blocks are valid in every ggml type (scale 0), and llama.cpp's kernels take as long on
zeros as on real weights, which is all a speed measurement needs.

Needs the ``gguf`` package (a core dependency) and, for ``write_slice_gguf``, numpy (the [gguf] extra).
"""

from __future__ import annotations

from pathlib import Path


def reduced_config(entry: dict, n_layers: int) -> dict:
    """The catalog entry as an HF text config with the real widths and only a few layers (S..F pattern kept)."""
    family = entry["family"]
    cfg = {k: v for k, v in entry.items() if not isinstance(v, (list, dict)) or k in ("moe",)}
    types = entry["layer_types"]
    # the first layers plus the first full layer, so both caches exist
    first_full = types.index("F")
    keep = sorted(set(range(n_layers - 1)) | {first_full})[:n_layers]
    lt = "".join(types[i] for i in keep)
    if "F" not in lt:
        lt = lt[:-1] + "F"
    cfg.update(num_hidden_layers=len(lt), layer_types=["full_attention" if c == "F" else "sliding_attention" for c in lt],
               rms_norm_eps=1e-6, tie_word_embeddings=True, model_type={"gemma2": "gemma2", "gemma3": "gemma3_text",
                                                                        "gemma4": "gemma4_text"}[family])
    ff = entry["intermediate_size"]
    cfg["intermediate_size"] = ff[0] if isinstance(ff, list) else ff
    if entry.get("num_kv_shared_layers"):
        # llama.cpp maps a shared layer to the last KV layer of its kind (n_kv_from_start - 1 full, - 2 sliding),
        # so the KV-storing layers must end "S F", as the real models' do
        lt = "SF" * (n_layers // 2)
        cfg["layer_types"] = ["full_attention" if c == "F" else "sliding_attention" for c in lt]
        cfg["num_hidden_layers"] = len(lt)
        cfg["num_kv_shared_layers"] = len(lt) - 2
    if family == "gemma4" and entry.get("moe"):
        mo = entry["moe"]
        cfg.update(num_experts=mo["num_experts"], top_k_experts=mo["top_k_experts"],
                   moe_intermediate_size=mo["moe_intermediate_size"], enable_moe_block=True)
    cfg.pop("moe", None)
    cfg.setdefault("hidden_size_per_layer_input", 0)  # Gemma4TextConfig would default it to 256
    return cfg


def width_spec(entry: dict, n_layers: int):
    """(HF text config, planner ModelSpec) of a catalog model at its real widths with n_layers layers."""
    from planner.catalog import spec_from_config

    cfg = reduced_config(entry, n_layers)
    spec = spec_from_config(dict(cfg, layer_types="".join("F" if t.startswith("full") else "S" for t in cfg["layer_types"])),
                            name=entry["name"], source="bench")
    return cfg, spec


def add_slice_vocab(w, n_vocab: int) -> None:
    """A SentencePiece-style vocabulary with byte fallback, so any prompt tokenizes."""
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>"] + [f"<0x{b:02X}>" for b in range(256)] + ["\u2581"]
    tokens += [f"t{i}" for i in range(n_vocab - len(tokens))]
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * n_vocab)
    w.add_token_types([3, 3, 3, 2] + [6] * 256 + [1] * (n_vocab - 260))
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)


def write_slice_gguf(entry: dict, ftype: str, path: Path, n_layers: int):
    """A zero-weight GGUF of ``entry`` at its real widths with ``n_layers`` layers in llama.cpp file type
    ``ftype`` (Q4_K_M, Q8_0, F16 ...), the tensor data left as holes. Returns (path, ModelSpec)."""
    import gguf
    import numpy as np

    from planner.formats import LLAMA_FTYPE_IDS, gguf_tensor_types, tensor_bytes
    from quantize.convert import read_hparams, write_hparams

    cfg, spec = width_spec(entry, n_layers)
    hp = read_hparams(cfg)
    w = gguf.GGUFWriter(str(path), hp.arch.name.lower())
    write_hparams(w, hp)
    w.add_file_type(int(LLAMA_FTYPE_IDS[ftype]))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    add_slice_vocab(w, spec.vocab)
    sizes = []
    for t, typ in gguf_tensor_types(spec, ftype):
        nbytes = tensor_bytes(typ, t.shape)
        w.add_tensor_info(t.name, t.shape, np.dtype(np.float32), nbytes, raw_dtype=gguf.GGMLQuantizationType[typ])
        sizes.append(nbytes)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    f = w.fout[0]
    for nbytes in sizes:  # the layout of GGUFWriter.write_tensors_to_file, data left unwritten
        w.write_padding(f, f.tell())
        f.seek(nbytes, 1)
        w.write_padding(f, nbytes)
    end = f.tell()
    f.truncate(end)
    w.close()
    return path, spec
