"""`recommend --emit DIR`: what it writes, how (modes, atomic, no overwrite without --force), and the
"run it" section; the issue's vLLM TP=2 command end to end."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

from click.testing import CliRunner

from planner.cli import main

EXPECTED_LLAMA = {"recipe.json", "run-llama-server.sh", "run-llama-cli.sh", "load_llama_cpp_python.py",
                  "serve_llama_cpp_python.py", "Modelfile", "run-ollama-serve.sh", "run-ollama.sh", "run-lmstudio.sh"}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_emit_writes_every_recipe_with_modes(tmp_path):
    out = tmp_path / "recipes"
    r = run("recommend", "--model", "27b", "--target", "rtx4090", "--emit", out)
    assert r.exit_code == 0, r.output
    fmt = json.loads((out / "recipe.json").read_text())["plan"]["weight_format"]
    assert "writing 9 files" in r.output and "run it" in r.output and f"llama-server -m gemma-3-27b-{fmt}.gguf" in r.output
    names = {p.name for p in out.iterdir()}
    assert names == EXPECTED_LLAMA  # no temporary files left behind
    for p in out.iterdir():
        mode = stat.S_IMODE(p.stat().st_mode)
        if p.suffix in (".sh", ".py"):
            assert mode & stat.S_IXUSR, p.name
        else:
            assert not mode & stat.S_IXUSR, p.name
    doc = json.loads((out / "recipe.json").read_text())
    assert doc["schema"] == "gemma-plan/recipe/1" and doc["plan"]["model"] == "gemma-3-27b"
    assert set(doc["recipes"]) == {"llama-server", "llama-cli", "llama-cpp-python", "ollama", "lmstudio"}
    assert doc["target"]["hardware"]["name"] == "rtx4090"
    assert doc["recipes"]["llama-server"]["files"]["run-llama-server.sh"] == (out / "run-llama-server.sh").read_text()


def test_emit_refuses_to_overwrite_without_force(tmp_path):
    out = tmp_path / "r"
    assert run("recommend", "--model", "4b", "--target", "rtx4090", "--emit", out).exit_code == 0
    (out / "Modelfile").write_text("mine\n")
    r = run("recommend", "--model", "4b", "--target", "rtx4090", "--emit", out)
    assert r.exit_code != 0 and "--force" in r.output and len(r.output.strip().splitlines()) == 1
    assert (out / "Modelfile").read_text() == "mine\n"
    r = run("recommend", "--model", "4b", "--target", "rtx4090", "--emit", out, "--force")
    assert r.exit_code == 0 and (out / "Modelfile").read_text().startswith("# gemma-plan recipe")


def test_emit_json_lists_the_files(tmp_path):
    out = tmp_path / "j"
    r = run("recommend", "--model", "4b", "--target", "rtx4090", "--emit", out, "--json")
    assert r.exit_code == 0
    d = json.loads(r.output)
    assert d["emitted"]["dir"] == str(out) and {os.path.basename(f) for f in d["emitted"]["files"]} == EXPECTED_LLAMA
    assert d["plan"]["weight_format"]  # the usual contract is unchanged


def test_issue_example_vllm_tp2_on_2x_a6000(tmp_path):
    out = tmp_path / "v"
    r = run("recommend", "--model", "31b", "--target", "2x-a6000", "--engine", "vllm", "--quant", "bf16", "--json", "--emit", out)
    assert r.exit_code == 0, r.output
    p = json.loads(r.output)["plan"]
    assert p["fits"] and p["settings"]["tensor_parallel"] == 2 and p["settings"]["pipeline_parallel"] == 1
    assert len([d for d in p["memory"]["devices"] if d["weights_bytes"]]) == 2
    script = (out / "run-vllm.sh").read_text()
    assert "vllm serve google/gemma-4-31B-it --max-model-len 32768 --gpu-memory-utilization 0.92" in script
    assert " -tp 2 -pp 1 " in script and os.access(out / "run-vllm.sh", os.X_OK)


def test_nothing_fits_writes_nothing(tmp_path):
    out = tmp_path / "none"
    r = run("recommend", "--model", "31b", "--target", "raspberry-pi-5-8gb", "--quant", "Q8_0", "--emit", out)
    assert r.exit_code == 3 and not out.exists()


def test_recommend_with_emit_imports_no_heavy_modules(tmp_path):
    code = ("import sys; from planner.cli import main\n"
            f"try:\n main(['recommend','--model','26b','--target','rtx4070','--emit',{str(tmp_path / 'e')!r},'--json'])\n"
            "except SystemExit: pass\n"
            "print('HEAVY', [m for m in ('torch','transformers','llama_cpp') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out and (tmp_path / "e" / "recipe.json").exists()
