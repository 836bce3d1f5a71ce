"""`gemma-plan validate`: static checks on emitted recipes (and on tampered ones), the hardware re-check,
one-line errors, and --run on a tiny quantized GGUF with the real llama-cpp-python and its server."""

from __future__ import annotations

import json
import socket
import sys

import pytest
from click.testing import CliRunner

from planner.cli import main
from planner.validate import FAIL, OK, validate
from profiles.targets import load_target


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _emit(tmp_path, *args, name="r"):
    out = tmp_path / name
    r = run("recommend", *args, "--emit", out)
    assert r.exit_code == 0, r.output
    return out


def _status(v, name):
    return next(c for c in v.checks if c.name == name).status


def test_emitted_recipe_passes_when_the_model_is_there(tmp_path):
    out = _emit(tmp_path, "--model", "27b", "--target", "rtx4090")
    v = validate(out, hw=load_target("rtx4090"))
    assert _status(v, "model") == FAIL and not v.ok  # the placeholder GGUF is not there yet
    fmt = json.loads((out / "recipe.json").read_text())["plan"]["weight_format"]
    (out / f"gemma-3-27b-{fmt}.gguf").write_bytes(b"")
    v = validate(out, hw=load_target("rtx4090"))
    assert v.ok, [c for c in v.checks if c.status == FAIL]
    for name in ("recipe llama-server", "recipe llama-cli", "recipe llama-cpp-python", "recipe ollama", "recipe lmstudio",
                 "context", "engine version", "hardware"):
        assert _status(v, name) == OK, name
    r = run("validate", out, "--target", "rtx4090")
    assert r.exit_code == 0 and "consistent" in r.output


def _tamper(out, fn):
    p = out / "recipe.json"
    doc = json.loads(p.read_text())
    fn(doc)
    p.write_text(json.dumps(doc))


@pytest.mark.parametrize("what,recipe", [
    ("llama-server -c", "recipe llama-server"),
    ("llama-server --fit", "recipe llama-server"),
    ("Modelfile num_ctx", "recipe ollama"),
    ("Llama n_ctx", "recipe llama-cpp-python"),
    ("launcher swa_full", "recipe llama-cpp-python"),
])
def test_a_changed_setting_fails_its_recipe(tmp_path, what, recipe):
    out = _emit(tmp_path, "--model", "4b", "--target", "rtx4090")

    def edit(doc):
        r = doc["recipes"]
        if what == "llama-server -c":
            argv = r["llama-server"]["steps"][0]["argv"]
            argv[argv.index("-c") + 1] = "65536"
        elif what == "llama-server --fit":
            argv = r["llama-server"]["steps"][0]["argv"]
            i = argv.index("--fit")
            del argv[i:i + 2]
        elif what == "Modelfile num_ctx":
            f = r["ollama"]["files"]
            f["Modelfile"] = f["Modelfile"].replace("PARAMETER num_ctx 32768", "PARAMETER num_ctx 2048")
        elif what == "Llama n_ctx":
            f = r["llama-cpp-python"]["files"]
            f["load_llama_cpp_python.py"] = f["load_llama_cpp_python.py"].replace("n_ctx=32768", "n_ctx=512")
        else:
            f = r["llama-cpp-python"]["files"]
            f["serve_llama_cpp_python.py"] = f["serve_llama_cpp_python.py"].replace("SWA_FULL = False", "SWA_FULL = True")

    _tamper(out, edit)
    v = validate(out, hw=load_target("rtx4090"))
    assert _status(v, recipe) == FAIL
    files = "files: " + recipe.split(" ", 1)[1]
    assert _status(v, files) == FAIL and any(d["file"].startswith(f"recipe.json: recipes.{recipe.split(' ', 1)[1]}") for d in v.diffs)
    others = [c for c in v.checks if c.status == FAIL and c.name not in (recipe, files, "model")]
    assert not others


def test_context_above_the_trained_maximum_fails(tmp_path):
    out = _emit(tmp_path, "--model", "4b", "--target", "rtx4090")
    _tamper(out, lambda d: d["plan"]["settings"].update(n_ctx=10_000_000))
    v = validate(out)
    assert _status(v, "context") == FAIL and "131072" in next(c.detail for c in v.checks if c.name == "context")


def test_other_hardware_says_what_changed(tmp_path):
    out = _emit(tmp_path, "--model", "27b", "--target", "rtx4090")
    r = run("validate", out, "--target", "rtx3060-12gb", "--json")
    assert r.exit_code == 4
    hw = next(c for c in json.loads(r.output)["checks"] if c["name"] == "hardware")
    assert hw["status"] == "fail" and "RTX 3060" in hw["detail"] and "changed" in hw["detail"]


def test_split_recipe_on_another_gpu_count_fails_the_split(tmp_path):
    out = _emit(tmp_path, "--model", "27b", "--target", "2x-rtx3090", "--ctx", "131072")
    v = validate(out, hw=load_target("rtx4090"))
    assert _status(v, "tensor split") == FAIL


def test_old_engine_version_warns(tmp_path):
    out = _emit(tmp_path, "--model", "4b", "--target", "rtx4090")
    _tamper(out, lambda d: d["plan"]["memory"].update(engine_version="llama.cpp b4000"))
    assert _status(validate(out), "engine version") == "warn"


def test_vllm_recipe_validates_and_refuses_run(tmp_path):
    out = _emit(tmp_path, "--model", "31b", "--target", "2x-a6000", "--engine", "vllm", "--quant", "bf16")
    v = validate(out, hw=load_target("2x-a6000"))
    assert v.ok and _status(v, "recipe vllm") == OK and _status(v, "model") == "skip"
    r = run("validate", out, "--target", "2x-a6000", "--run")
    assert r.exit_code == 1 and "GGUF" in r.output and len(r.output.strip().splitlines()) == 1


def test_bad_recipe_files_are_one_line_errors(tmp_path):
    r = run("validate", tmp_path / "missing.json")
    assert r.exit_code == 1 and "no recipe file" in r.output
    (tmp_path / "x.json").write_text("{not json")
    r = run("validate", tmp_path / "x.json")
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit) and len(r.output.strip().splitlines()) == 1
    assert r.output.splitlines()[0] == (f"Error: {tmp_path / 'x.json'} is not a readable JSON recipe (JSONDecodeError); pass "
                                        "the recipe.json written by `gemma-plan recommend --emit DIR` or `gemma-plan quantize`")
    (tmp_path / "y.json").write_text(json.dumps({"hello": 1}))
    assert "not a gemma-plan recipe" in run("validate", tmp_path / "y.json").output


def test_run_without_llama_cpp_says_install_the_extra(tmp_path, monkeypatch):
    out = tmp_path / "r"
    assert run("recommend", "--model", "1b", "--target", "cpu-16gb", "--emit", out).exit_code == 0
    doc = json.loads((out / "recipe.json").read_text())
    (out / doc["model"]["ref"]["value"]).write_bytes(b"GGUF")  # the file the recipe names, made as its note says
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp now raises ImportError
    r = run("validate", out, "--target", "cpu-16gb", "--run")
    assert r.exit_code == 1 and "gemma-plan[gguf]" in r.output and len(r.output.strip().splitlines()) == 1


# ---------------------------------------------------------------- the folder against the plan


def test_untouched_folder_is_byte_for_byte_the_plan(tmp_path):
    out = _emit(tmp_path, "--model", "4b", "--target", "rtx4090")
    v = validate(out, hw=load_target("rtx4090"))
    files = [c for c in v.checks if c.name.startswith("files: ")]
    assert {c.name for c in files} == {"files: llama-server", "files: llama-cli", "files: llama-cpp-python", "files: ollama",
                                       "files: lmstudio"}
    assert all(c.status == OK for c in files) and not v.diffs


@pytest.mark.parametrize("edit", ["context", "added command"])
def test_an_edited_script_fails_with_a_diff(tmp_path, edit):
    out = _emit(tmp_path, "--model", "4b", "--target", "rtx4090")
    script = out / "run-llama-server.sh"
    text = script.read_text()
    if edit == "context":
        text = text.replace("-c 32768", "-c 131072")
        assert "-c 131072" in text
    else:
        text = text.replace("set -eu\n", "set -eu\ntouch pwned\n")
    script.write_text(text)
    r = run("validate", out, "--target", "rtx4090")
    assert r.exit_code == 4 and "some checks failed" in r.output
    assert "--- regenerated/run-llama-server.sh" in r.output
    assert ("+" + next(ln for ln in text.splitlines() if "131072" in ln or "pwned" in ln)) in r.output.replace("\n ", "\n")
    d = json.loads(run("validate", out, "--target", "rtx4090", "--json").output)
    failed = {c["name"] for c in d["checks"] if c["status"] == "fail"}
    assert "files: llama-server" in failed and [x["file"] for x in d["diffs"]] == ["run-llama-server.sh"]


def test_an_edited_script_inside_recipe_json_fails_with_a_diff(tmp_path):
    out = _emit(tmp_path, "--model", "4b", "--target", "rtx4090")
    marker = tmp_path / "pwned"

    def edit(doc):
        f = doc["recipes"]["llama-cpp-python"]["files"]
        f["serve_llama_cpp_python.py"] += f"open({str(marker)!r}, 'w').close()\n"

    _tamper(out, edit)
    v = validate(out, hw=load_target("rtx4090"))
    assert _status(v, "files: llama-cpp-python") == FAIL and not v.ok
    diff = next(d["diff"] for d in v.diffs if d["file"] == "recipe.json: recipes.llama-cpp-python.files.serve_llama_cpp_python.py")
    assert f"+open({str(marker)!r}, 'w').close()" in diff.splitlines()  # one added line, shown as that line


def test_run_starts_nothing_that_differs_from_the_plan(tmp_path):
    out = tmp_path / "r"
    assert run("recommend", "--model", "1b", "--target", "cpu-16gb", "--emit", out).exit_code == 0
    doc = json.loads((out / "recipe.json").read_text())
    (out / doc["model"]["ref"]["value"]).write_bytes(b"GGUF")
    marker = tmp_path / "pwned"
    line = f"open({str(marker)!r}, 'w').close()\n"
    (out / "serve_llama_cpp_python.py").write_text((out / "serve_llama_cpp_python.py").read_text() + line)
    _tamper(out, lambda d: d["recipes"]["llama-cpp-python"]["files"].update(
        {"serve_llama_cpp_python.py": d["recipes"]["llama-cpp-python"]["files"]["serve_llama_cpp_python.py"] + line}))
    r = run("validate", out, "--target", "cpu-16gb", "--run", "--json")
    d = json.loads(r.output)
    assert r.exit_code == 4 and not marker.exists()
    assert next(c for c in d["checks"] if c["name"] == "run")["detail"].startswith("nothing was started")
    assert d["measured"] is None and d["served"] is None


def test_symlinked_or_hostile_files_are_reported_not_followed(tmp_path):
    out = _emit(tmp_path, "--model", "4b", "--target", "rtx4090")
    real = tmp_path / "elsewhere.sh"
    real.write_text((out / "run-llama-cli.sh").read_text())
    (out / "run-llama-cli.sh").unlink()
    (out / "run-llama-cli.sh").symlink_to(real)
    (out / "run-llama-server.sh").write_text((out / "run-llama-server.sh").read_text() + "echo \x1b[2J\n")
    v = validate(out, hw=load_target("rtx4090"))
    assert "symbolic link" in next(c.detail for c in v.checks if c.name == "files: llama-cli")
    diff = next(d["diff"] for d in v.diffs if d["file"] == "run-llama-server.sh")
    assert "\x1b" not in diff and "\\x1b" in diff  # escaped, never sent to the terminal


# ---------------------------------------------------------------- real engine


@pytest.fixture(scope="module")
def tiny_q8(tiny_gguf, llama_cpp_module, tmp_path_factory):
    from quantize.llamacpp import quantize_gguf

    out = tmp_path_factory.mktemp("q") / "tiny-Q8_0.gguf"
    return quantize_gguf(tiny_gguf("gemma3_text"), out, "Q8_0")


def _port_closed(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow
def test_run_loads_measures_serves_and_stops(tiny_q8, tmp_path):
    pytest.importorskip("uvicorn", reason="llama-cpp-python's server extra is not installed")
    import psutil

    out = _emit(tmp_path, "--model", tiny_q8, "--quant", "Q8_0", "--target", "cpu-16gb", "--ctx", "4096")
    r = run("validate", out, "--target", "cpu-16gb", "--run", "--json", "--timeout", "120")
    d = json.loads(r.output)
    assert r.exit_code == 0, [c for c in d["checks"] if c["status"] == "fail"]
    status = {c["name"]: c["status"] for c in d["checks"]}
    assert status["model type"] == "ok" and status["run: KV cache"] == "ok" and status["run: weights"] == "ok"
    assert status["run: server"] == "ok" and status["run: server KV"] == "ok"
    assert d["measured"]["kv_bytes"] == d["measured"]["kv_bytes_planned"]
    assert d["served"]["completion_tokens"] >= 1
    assert _port_closed(d["served"]["port"]) and not psutil.Process().children(recursive=True)


@pytest.mark.slow
def test_run_with_parallel_slots_measures_every_stream(tiny_q8, tmp_path):
    out = _emit(tmp_path, "--model", tiny_q8, "--quant", "Q8_0", "--target", "cpu-16gb", "--ctx", "4096", "--parallel", "2")
    from quantize.measure import validate as validate_and_run

    v = validate_and_run(out, hw=load_target("cpu-16gb"), run=True, serve=False)
    assert v.ok and _status(v, "run: KV cache") == OK and v.measured["settings"]["n_seq_max"] == 2
