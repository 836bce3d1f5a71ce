"""Which llama.cpp builds the memory model claims, and the rules that differ between them.

A plan names one build (``RuntimeSettings.engine_version``, ``--engine-version``). Each entry says
where its rules were read; a build whose source was not read is planned with the newest verified
rules plus a wider margin, and the plan says so. Facts only, no I/O: the estimate path imports this.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20


@dataclass(frozen=True)
class LlamaBuild:
    """One llama.cpp release and the allocator rules that differ from the default build."""

    name: str  # what --engine-version takes: the release tag
    commit: str
    date: str
    verified: bool  # the rules below were read in this build's source
    source: str  # where the rules (and the build number) were read
    # Rules that moved between builds (each names the llama.cpp code it mirrors):
    embd_input_tensor: bool  # build_inp_embd creates an F32 inp_embd input next to the token ids (PR #18550)
    kq_mask_f16: bool  # with flash attention the KQ mask input is F16, not F32 + a cast (PR #23764, 2026-05-27)
    kv_idx_inputs: bool  # K/V rows are stored through k_idxs/v_idxs inputs (ggml_set_rows, mid 2025)
    server_outputs_max_parallel: bool  # llama-server reserves the graph for n_parallel outputs (server_output_limits)
    ngl_output_first: bool  # -ngl k offloads the output layer first (llama_model_base::load_tensors)
    compute_log_prefix: str  # function that prints "compute buffer size" lines


BUILDS: dict[str, LlamaBuild] = {
    "b11312": LlamaBuild(
        name="b11312",
        commit="0c1e57098bba43ac29e6e3b677cdceebdd22334f",
        date="2026-10-01",
        verified=True,
        source="vendor/llama.cpp of the llama-cpp-python 0.3.36 sdist (the build gemma-plan measures on); "
               "release tag b11312 = commit 0c1e57098 as public release notes and pinned build scripts name it",
        embd_input_tensor=True,
        kq_mask_f16=True,
        kv_idx_inputs=True,
        server_outputs_max_parallel=True,
        ngl_output_first=True,
        compute_log_prefix="sched_reserve",
    ),
}
# The newest build whose source was read: the default of --engine-version.
DEFAULT_BUILD = "b11312"
VENDORED_BUILD = "b11312"
# Extra memory kept free on each GPU when a plan names a build whose rules were not read here: the
# compute buffers are the part that moved between builds (graph reservation, output rows).
UNVERIFIED_MARGIN_FRACTION = 0.25
UNVERIFIED_MARGIN_MIN = 256 * MiB


def parse_build(text: str) -> tuple[LlamaBuild, bool]:
    """An --engine-version value -> (the rules to use, whether they were verified for that build).

    Known tags return their own entry. Any other release tag ("b11459") is planned with the newest
    verified rules and reported as unverified; anything that is not a release tag is an error."""
    t = (text or DEFAULT_BUILD).strip().lower()
    if t in ("vendored", "llama-cpp-python"):
        t = VENDORED_BUILD
    if t in BUILDS:
        b = BUILDS[t]
        return b, b.verified
    if t.startswith("b") and t[1:].isdigit() and 1 <= int(t[1:]) <= 10**6:
        base = BUILDS[DEFAULT_BUILD]
        return LlamaBuild(name=t, commit="", date="", verified=False,
                          source=f"not read; planned with the rules of {base.name}",
                          embd_input_tensor=base.embd_input_tensor, kq_mask_f16=base.kq_mask_f16,
                          kv_idx_inputs=base.kv_idx_inputs,
                          server_outputs_max_parallel=base.server_outputs_max_parallel,
                          ngl_output_first=base.ngl_output_first,
                          compute_log_prefix=base.compute_log_prefix), False
    raise ValueError(f"unknown llama.cpp build '{text}'")


def version_label(b: LlamaBuild) -> str:
    if b.verified:
        return f"llama.cpp {b.name} ({b.commit[:9]}, {b.date})" + (" as vendored in llama-cpp-python 0.3.36" if b.name == VENDORED_BUILD else "")
    return f"llama.cpp {b.name} (rules of {DEFAULT_BUILD}; not verified for this build)"


# Graph-input rules of builds older than any --engine-version accepts, kept to score public logs of
# those builds (bench/gpu_logs.py "older build" part); each names the change that ended it.
OLDER_RULES: dict[str, dict] = {
    # before PR #23764 (merged 2026-05-27): the KQ masks are F32 graph inputs cast to F16 on the device
    "before-pr23764": {"kq_mask_f16": False},
    # before the ggml_set_rows KV store (mid 2025) and PR #18550: no k_idxs/v_idxs and no inp_embd input
    "before-set-rows": {"kq_mask_f16": False, "kv_idx_inputs": False, "embd_input_tensor": False},
}
