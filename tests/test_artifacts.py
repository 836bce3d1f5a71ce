"""The artifact catalogue (planner/data/artifacts.json): every entry loads and checks, every catalog model has one,
and recommend names a published file with its source, size and fetch command in plans and recipes."""

import json
import subprocess
import sys

import pytest

from planner.artifacts import ArtifactCatalogError, check_entry, choose, fetch_argv, load_artifacts
from planner.catalog import catalog_entries


def test_every_entry_checks_and_every_catalog_model_has_one():
    models = {m["name"] for m in catalog_entries()}
    entries = load_artifacts()
    assert {e["model"] for e in entries} == models
    for e in entries:
        assert e["source"].startswith("http")
        assert (e["bytes"] is not None) == e["size_exact"]


@pytest.mark.parametrize("bad, why", [
    ({"kind": "zip"}, "kind"),
    ({"model": "gemma-9-1t"}, "catalog"),
    ({"source": "a blog"}, "URL"),
    ({"repo": "no-owner"}, "repo"),
    ({"file": "../../etc/passwd"}, "plain file name"),
    ({"bytes": 123}, "size_exact"),
    ({"bytes": True, "size_exact": True}, "not int"),
    ({"colour": "red"}, "unknown key"),
])
def test_a_bad_entry_is_refused_with_its_reason(bad, why):
    good = {"model": "gemma-4-31b", "kind": "gguf", "repo": "unsloth/gemma-4-31B-it-GGUF", "file": "x-Q4_K_M.gguf",
            "quant": "Q4_K_M", "bytes": None, "size_exact": False, "source": "https://example.org/x"}
    check_entry(good, {"gemma-4-31b"})
    with pytest.raises(ArtifactCatalogError, match=why):
        check_entry({**good, **bad}, {"gemma-4-31b"})


def test_choose_prefers_a_named_file_with_a_published_size_and_says_the_basis():
    art, notes = choose("gemma-4-31b", "Q4_K_M", "llama.cpp")
    assert art["repo"] == "unsloth/gemma-4-31B-it-GGUF" and art["file"] == "gemma-4-31B-it-Q4_K_M.gguf"
    assert art["size_exact"] is False and art["size_published"] == "18.3 GB"
    assert "per-tensor rule" in art["weights_basis"]
    assert art["fetch"] == ["hf", "download", "unsloth/gemma-4-31B-it-GGUF", "gemma-4-31B-it-Q4_K_M.gguf", "--local-dir", "."]
    assert any("ggml-org" in a for a in art["also"])


def test_a_published_qat_file_is_named_when_the_plan_is_not_one():
    art, notes = choose("gemma-3-12b", "Q3_K_M", "llama.cpp")
    assert art is None
    assert any("quantization-aware" in n and "gemma-3-12b-it-qat-q4_0-gguf" in n for n in notes)


def test_ollama_and_lmstudio_fetch_commands():
    assert fetch_argv({"kind": "ollama", "tag": "gemma3n:e2b"}) == ["ollama", "pull", "gemma3n:e2b"]
    assert fetch_argv({"kind": "lmstudio", "tag": "gemma-3-4b-it-qat"}) == ["lms", "get", "gemma-3-4b-it-qat", "-y"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "planner.cli", *args], capture_output=True, text=True, timeout=120)


def test_recommend_31b_rtx4090_names_the_file_its_recipes_fetch_and_load(tmp_path):
    r = _cli("recommend", "--model", "31b", "--target", "rtx4090", "--json", "--emit", str(tmp_path / "e"))
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)["plan"]
    art = plan["artifact"]
    assert art["file"] == "gemma-4-31B-it-Q4_K_M.gguf" and art["fetch"][:2] == ["hf", "download"]
    assert plan["launch"]["recipe"] == "llama-server" and plan["launch"]["argv"][:3] == ["llama-server", "-m", art["file"]]
    script = (tmp_path / "e" / "run-llama-server.sh").read_text()
    assert "hf download unsloth/gemma-4-31B-it-GGUF gemma-4-31B-it-Q4_K_M.gguf --local-dir ." in script
    assert "MODEL=gemma-4-31B-it-Q4_K_M.gguf" in script
    doc = json.loads((tmp_path / "e" / "recipe.json").read_text())
    assert doc["model"]["ref"]["artifact"]["file"] == art["file"]
    v = _cli("validate", str(tmp_path / "e" / "recipe.json"), "-t", "rtx4090", "--json")
    checks = {c["name"]: c for c in json.loads(v.stdout)["checks"]}
    assert all(c["status"] == "ok" for n, c in checks.items() if n.startswith("files"))
    assert "hf download" in checks["model"]["detail"]


def test_an_exact_published_size_is_carried_with_its_sha256_and_the_basis_stays_the_rule():
    art, _ = choose("gemma-2-27b", "Q4_K_M", "llama.cpp")
    assert art["size_exact"] and art["bytes"] == 16645383008 and len(art["sha256"]) == 64
    assert "tensor mix is not" in art["weights_basis"]


def test_a_gptq_plan_serves_a_published_checkpoint_by_its_hub_id(tmp_path):
    r = _cli("recommend", "--model", "gemma-2-27b", "--target", "rtx4090", "--engine", "vllm", "--quant", "gptq-int4", "--json",
             "--emit", str(tmp_path / "v"))
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)["plan"]
    assert plan["artifact"]["kind"] == "gptq" and plan["artifact"]["fetch"][:2] == ["hf", "download"]
    assert plan["launch"]["argv"][:3] == ["vllm", "serve", plan["artifact"]["repo"]]
    v = _cli("validate", str(tmp_path / "v" / "recipe.json"), "-t", "rtx4090", "--json")
    checks = json.loads(v.stdout)["checks"]
    assert all(c["status"] == "ok" for c in checks if c["name"].startswith("files"))


def test_a_published_file_larger_than_the_rule_is_called_out():
    art, notes = choose("gemma-3-12b", "Q4_0", "llama.cpp", rule_bytes=6_880_612_224)
    assert art["qat"] and art["repo"] == "google/gemma-3-12b-it-qat-q4_0-gguf"
    assert any("8.07 GB, 17% more than the Q4_0 rule's 6.88 GB" in n and "--model hf.co/google/" in n for n in notes)
    _, quiet = choose("gemma-4-31b", "Q4_K_M", "llama.cpp", rule_bytes=18_670_000_000)
    assert not any("more than the" in n for n in quiet)


def test_a_format_only_ollama_publishes_keeps_the_quantize_command_and_names_the_pull(tmp_path):
    r = _cli("recommend", "--model", "gemma-3-27b", "--quant", "Q4_K_M", "--target", "rtx4090", "--emit", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    script = (tmp_path / "o" / "run-llama-server.sh").read_text()
    assert "gemma-plan quantize -m google/gemma-3-27b-it" in script and "ollama pull gemma3:27b-it-q4_K_M" in script
    f = _cli("fetch", str(tmp_path / "o" / "recipe.json"))
    assert f.returncode == 0 and f.stdout.strip() == "ollama pull gemma3:27b-it-q4_K_M"


def test_litert_recipes_download_the_bundle_the_catalogue_names():
    """The LiteRT-LM scripts fetch the repository and file of the catalogue entry (the plan.artifact of a litert-lm plan),
    never a name of their own."""
    from planner.recipes import render_all
    from planner.recipes.litert import BUNDLES, published
    from planner.search import recommend
    from profiles.targets import load_target

    for b in BUNDLES:
        art = published(b.model)
        assert (b.repo, b.file) == (art["repo"], art.get("file")) and art["kind"] == "litert"
    hw = load_target("pixel-9")
    for model in ("gemma-3-1b", "gemma-3n-e2b", "gemma-4-e2b"):
        spec = next(m for m in _all_models() if m.name == model)
        plan = recommend(hw, models=[spec], ctx=4096, target="pixel-9").plan
        r = render_all(plan, hw, spec=spec)["litert"]
        art = published(model)
        want = ["hf", "download", art["repo"]] + ([art["file"]] if art.get("file") else ["--include", "*.litertlm"])
        assert [str(a) for a in r.steps[0].argv][: len(want)] == want, (model, r.steps[0].argv)
        assert f"hf download {art['repo']}" in r.files["run-litert-android.sh"]
        if plan.engine == "litert-lm":
            assert (plan.artifact["repo"], plan.artifact["file"]) == (art["repo"], art.get("file"))


def _all_models():
    from planner.catalog import all_models

    return all_models()


def test_mlx_recipe_downloads_a_published_conversion_of_the_same_bits_else_converts():
    import dataclasses

    from planner.recipes import render_all
    from planner.search import recommend
    from profiles.targets import load_target

    hw = load_target("m4-max-128gb")
    spec = next(m for m in _all_models() if m.name == "gemma-3-27b")
    p4 = recommend(hw, models=[spec], formats=["Q4_K_M"], target="m4-max-128gb").plan
    r = render_all(p4, hw, spec=spec)["mlx"]
    assert [str(a) for a in r.steps[0].argv] == ["hf", "download", "mlx-community/gemma-3-text-27b-it-4bit", "--local-dir", "${MLX_MODEL}"]
    assert r.settings["mlx_repo"] == "mlx-community/gemma-3-text-27b-it-4bit" and "mlx_lm.convert" not in r.files["run-mlx.sh"]
    assert not any("gated" in n for n in r.notes)  # mlx-community's copies are not gated
    # the published one is text-only: a plan that loads the vision tower converts the full checkpoint instead
    pv = dataclasses.replace(p4, settings=dataclasses.replace(p4.settings, vision=True))
    assert render_all(pv, hw, spec=spec)["mlx"].steps[0].argv[:3] == ["mlx_lm.convert", "--hf-path", "google/gemma-3-27b-it"]
    # no 8-bit conversion of gemma-3-27b is published: convert
    p8 = recommend(hw, models=[spec], formats=["Q8_0"], target="m4-max-128gb").plan
    assert render_all(p8, hw, spec=spec)["mlx"].steps[0].argv[0] == "mlx_lm.convert"
