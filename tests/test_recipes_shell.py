"""Shell safety: hostile model names, paths, targets and template text cannot inject shell syntax, extra
Modelfile commands or Python code. Property tests (hypothesis) plus real /bin/sh runs with stub programs."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.catalog import get_model
from planner.recipes import render_all
from planner.recipes.base import RecipeError, ShellVar, comment, render_argv
from planner.recipes.llamacpp_python import read_load_script, read_serve_script
from planner.recipes.ollama import modelfile_quote, parse_modelfile
from planner.search import recommend
from profiles.targets import load_target

NASTY = ["$(touch pwned)", "`touch pwned`", "a; touch pwned", "x' ; touch pwned; '", '"; touch pwned; "', "-rf", "--help",
         "$HOME", "${RPC_SERVERS}", '"""', 'a """ b', "FROM x", "'", "\\", "*", "~root", "a b\tc", "PARAMETER num_ctx 1",
         "#comment", "ünïcödé 日本", "\u2028", "a\nPARAMETER num_gpu 0", "x\r\ntouch pwned", "\x00", "\x1b[31m"]
TEXT = st.one_of(st.sampled_from(NASTY), st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30))
_BASE: dict = {}


def _base(kind: str):
    if kind not in _BASE:
        if kind == "llama":
            spec, _ = get_model("26b")
            hw = load_target("rtx4070")
            plan = recommend(hw, models=[spec], formats=["Q4_K_M"]).plan  # MoE: -ot and every llama.cpp recipe
        else:
            spec, _ = get_model("31b")
            hw = load_target("cluster-2x-dgx-spark")
            plan = recommend(hw, models=[spec], engine="vllm", formats=["bf16"], ctx_max=True, parallel=4).plan  # Ray
        _BASE[kind] = (plan, spec, hw)
    return _BASE[kind]


def _has_control(s: str) -> bool:
    return comment(s) != s


FIXED = {"#!/bin/sh", "set -eu", 'cd "$(dirname "$0")"', "fi"}
DEFAULT = re.compile(r'^if \[ -z "\$\{([A-Z_]+):-\}" \]; then \1=(.*); fi$')


def _script_steps(plan, hw, ref, spec) -> list:
    """The llama.cpp scripts' own command lines: the steps with MODEL, BIND_ADDRESS, PORT as variables."""
    from planner.recipes import context_for
    from planner.recipes.base import Step
    from planner.recipes.llamacpp import RPC_PROGRAM, _argv

    if plan.engine != "llama.cpp":
        return []
    ctx = context_for(plan, hw, ref, spec)
    return [Step(_argv(ctx, p, True)) for p in ("llama-server", "llama-cli")] + [
        Step([RPC_PROGRAM, "--host", ShellVar("BIND_ADDRESS"), "--port", ShellVar("PORT")])]


def _check_script(text: str, steps) -> None:
    """Every line of a generated script is a comment, a fixed line, an export, a default whose value is one
    shell word, or one of the steps' lines (the last one exec-ed, maybe with the script's arguments)."""
    allowed = {st_.shell() for st_ in steps}
    allowed |= {f"if {st_.shell()}; then" for st_ in steps} | {"  " + st_.shell() for st_ in steps}
    for line in text.splitlines():
        if line.startswith("#") or line in FIXED:
            continue
        if line.startswith("export "):
            name, _, value = line[len("export "):].partition("=")
            assert name.isidentifier() and len(shlex.split(value)) == 1
            continue
        m = DEFAULT.match(line)
        if m:
            assert len(shlex.split(m.group(2))) == 1, line
            continue
        if line.startswith(("RPC_SERVERS=", "HEAD_ADDRESS=")):
            continue  # fixed preamble written by the package
        if line in allowed:
            continue
        body = line.removeprefix("exec ")
        body = body[:-len(' "$@"')] if body.endswith(' "$@"') else body
        assert body in allowed, line


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=TEXT, path=TEXT, target=TEXT)
def test_hostile_llama_plan_renders_safely_or_refuses(name, path, target):
    plan, spec, hw = _base("llama")
    hostile = dataclasses.replace(plan, model=name, target=target)
    ref = path + ".gguf"
    try:
        recipes = render_all(hostile, hw, model_ref=ref, spec=spec)
    except RecipeError:
        assert _has_control(ref)
        return
    assert not _has_control(ref)
    for r in recipes.values():
        for step in r.steps:
            if not any(isinstance(a, ShellVar) for a in step.argv):
                words = shlex.split(step.shell())
                assert words[len(step.env):] == [str(a) for a in step.argv]  # one word per argument, nothing else
        for fname, text in r.files.items():
            if fname.endswith(".sh"):
                _check_script(text, (r.steps + [type(r.steps[0])(["ollama", "serve"])] if r.steps else [])
                              + _script_steps(hostile, hw, ref, spec))
    server = recipes["llama-server"]
    model_arg = server.steps[0].argv[server.steps[0].argv.index("-m") + 1]
    assert model_arg in (ref, "./" + ref) and not model_arg.startswith("-")  # a path never reads as an option
    # lms links to the path as given: a relative one is made absolute from the script's folder
    assert str(recipes["lmstudio"].steps[0].argv[2]) in (model_arg, "${PWD}/" + model_arg.removeprefix("./"))
    # the Modelfile has exactly the commands it was meant to have, FROM is the path unchanged
    cmds = parse_modelfile(recipes["ollama"].files["Modelfile"])
    assert [c for c, _ in cmds] == ["model", "template", "stop", "num_ctx", "num_batch", "num_predict"]
    assert cmds[0][1] == model_arg
    # Python files: the path is a literal, read back unchanged; nothing else runs
    assert read_load_script(recipes["llama-cpp-python"].files["load_llama_cpp_python.py"])["model_path"] == model_arg
    assert read_serve_script(recipes["llama-cpp-python"].files["serve_llama_cpp_python.py"])["model_path"] == model_arg


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=TEXT, path=TEXT)
def test_hostile_vllm_plan_renders_safely_or_refuses(name, path):
    plan, spec, hw = _base("vllm")
    hostile = dataclasses.replace(plan, model=name, target=name)
    try:
        recipes = render_all(hostile, hw, model_ref=path, spec=spec)
    except RecipeError:
        assert _has_control(path)
        return
    r = recipes["vllm"]
    serve = r.steps[-1]
    assert serve.argv[:2] == ["vllm", "serve"] and not serve.argv[2].startswith("-")
    assert shlex.split(serve.shell()) == [str(a) for a in serve.argv]
    for fname, text in r.files.items():
        _check_script(text, r.steps)


@settings(max_examples=300, deadline=None)
@given(value=st.text(st.characters(blacklist_categories=("Cs",)), max_size=40) | st.sampled_from(NASTY))
def test_modelfile_values_round_trip_through_ollamas_parser(value):
    try:
        quoted = modelfile_quote(value)
    except RecipeError:
        # refused only for characters Ollama drops or a line ending in three quotes
        assert any(not (c in "\t\r\n" or c.isprintable()) for c in value) or any(
            value[:i].rstrip(" \t\r\n").endswith('"""') for i, c in enumerate(value) if c in "\r\n")
        return
    text = f"FROM base.gguf\nTEMPLATE {quoted}\nPARAMETER num_ctx 4096\n"
    assert parse_modelfile(text) == [("model", "base.gguf"), ("template", value), ("num_ctx", "4096")]


def test_modelfile_parser_port_matches_known_ollama_behaviour():
    assert parse_modelfile('FROM "foo bar"\n') == [("model", "foo bar")]
    assert parse_modelfile("FROM foo bar\n") == [("model", "foo bar")]  # spaces never end a value
    assert parse_modelfile('TEMPLATE """a\n"b"\nc"""\nFROM x') == [("template", 'a\n"b"\nc'), ("model", "x")]
    assert parse_modelfile("# c\nFROM x\nPARAMETER stop <end_of_turn>\n") == [("model", "x"), ("stop", "<end_of_turn>")]
    with pytest.raises(ValueError):
        parse_modelfile("PARAMETER num_ctx 1\n")  # no FROM
    with pytest.raises(ValueError):
        parse_modelfile('FROM "unterminated\n')
    with pytest.raises(RecipeError):
        modelfile_quote('ends with """\nmore "')


def test_shell_var_is_the_only_expansion():
    assert render_argv(["echo", "${X}"]) == "echo '${X}'"
    assert render_argv(["ray", "start", "--address", ShellVar("HEAD_ADDRESS", ":6379")]) == 'ray start --address "${HEAD_ADDRESS}":6379'
    with pytest.raises(ValueError):
        ShellVar("X; touch pwned")


def _stub_bin(tmp: Path, names: list[str]) -> Path:
    """Programs that append their argv as one JSON line to $ARGV_LOG instead of doing anything."""
    bindir = tmp / "bin"
    bindir.mkdir()
    for n in names:
        f = bindir / n
        f.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                     "open(os.environ['ARGV_LOG'], 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
        f.chmod(f.stat().st_mode | stat.S_IXUSR)
    return bindir


@pytest.mark.parametrize("nasty", ["$(touch pwned)", "x' ; touch pwned; '", '"; touch pwned; "', "`touch pwned`", "-rf dir"])
def test_generated_scripts_run_under_sh_pass_argv_unchanged(tmp_path, nasty):
    plan, spec, hw = _base("llama")
    model_dir = tmp_path / nasty
    model_dir.mkdir(parents=True)
    gguf = model_dir / f"{nasty}.gguf"
    gguf.write_bytes(b"GGUF")
    out = tmp_path / "out"
    out.mkdir()
    recipes = render_all(dataclasses.replace(plan, model=nasty, target=nasty), hw, model_ref=str(gguf), spec=spec)
    bindir = _stub_bin(tmp_path, ["llama-server", "llama-cli", "ollama", "lms"])
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL", "PORT", "BIND_ADDRESS", "RPC_SERVERS")}
    env.update(PATH=f"{bindir}:{os.environ['PATH']}", ARGV_LOG=str(tmp_path / "argv.log"))
    for name, script in (("llama-server", "run-llama-server.sh"), ("llama-cli", "run-llama-cli.sh"),
                         ("ollama", "run-ollama.sh"), ("lmstudio", "run-lmstudio.sh")):
        r = recipes[name]
        (out / script).write_text(r.files[script])
        (tmp_path / "argv.log").unlink(missing_ok=True)
        subprocess.run(["sh", str(out / script)], env=env, cwd=tmp_path, check=True, timeout=30)
        got = [json.loads(x) for x in (tmp_path / "argv.log").read_text().splitlines()]
        want = [[str(a) for a in s.argv[1:]] for s in r.steps if not s.where]
        assert got == want, name
    assert not list(tmp_path.rglob("pwned")) and not (out / "pwned").exists()


def test_cluster_llama_scripts_bind_localhost_and_need_rpc_servers(tmp_path):
    spec, _ = get_model("27b")
    hw = load_target("cluster-2x-dgx-spark")
    plan = recommend(hw, models=[spec], formats=["Q8_0"]).plan
    recipes = render_all(plan, hw, spec=spec)
    for r in recipes.values():
        for fname, text in r.files.items():
            (tmp_path / fname).write_text(text)
    bindir = _stub_bin(tmp_path, ["llama-server", "ggml-rpc-server"])
    log = tmp_path / "argv.log"
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL", "PORT", "BIND_ADDRESS", "RPC_SERVERS")}
    env.update(PATH=f"{bindir}:{os.environ['PATH']}", ARGV_LOG=str(log))
    subprocess.run(["sh", str(tmp_path / "run-rpc-server.sh")], env=env, cwd=tmp_path, check=True, timeout=30)
    assert json.loads(log.read_text()) == ["--host", "127.0.0.1", "--port", "50052"]  # nothing beyond this machine
    log.unlink()
    subprocess.run(["sh", str(tmp_path / "run-rpc-server.sh")], env=dict(env, BIND_ADDRESS="10.0.0.2"), cwd=tmp_path,
                   check=True, timeout=30)
    assert json.loads(log.read_text()) == ["--host", "10.0.0.2", "--port", "50052"]  # the address the user asked for
    log.unlink()
    res = subprocess.run(["sh", str(tmp_path / "run-llama-server.sh")], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=30)
    assert res.returncode != 0 and "RPC_SERVERS" in res.stderr and not log.exists()  # never a one-host run by accident
    subprocess.run(["sh", str(tmp_path / "run-llama-server.sh")], env=dict(env, RPC_SERVERS="$(touch pwned)"), cwd=tmp_path,
                   check=True, timeout=30)
    argv = json.loads(log.read_text())
    assert argv[argv.index("--rpc") + 1] == "$(touch pwned)" and argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("-m") + 1] == "gemma-3-27b-Q8_0.gguf" and not (tmp_path / "pwned").exists()


def test_ray_worker_script_keeps_the_head_address_literal(tmp_path):
    plan, spec, hw = _base("vllm")
    r = render_all(plan, hw, spec=spec)["vllm"]
    (tmp_path / "w.sh").write_text(r.files["run-ray-worker.sh"])
    bindir = _stub_bin(tmp_path, ["ray"])
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", ARGV_LOG=str(tmp_path / "argv.log"),
               HEAD_ADDRESS="$(touch pwned)")
    subprocess.run(["sh", str(tmp_path / "w.sh")], env=env, cwd=tmp_path, check=True, timeout=30)
    assert json.loads((tmp_path / "argv.log").read_text()) == ["start", "--address", "$(touch pwned):6379"]
    assert not (tmp_path / "pwned").exists()
    env.pop("HEAD_ADDRESS")
    res = subprocess.run(["sh", str(tmp_path / "w.sh")], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert res.returncode != 0 and "HEAD_ADDRESS" in res.stderr  # refuses to start without it


def test_control_characters_in_a_path_are_refused_with_one_line(tmp_path):
    plan, spec, hw = _base("llama")
    with pytest.raises(RecipeError) as e:
        render_all(plan, hw, model_ref="a\nb.gguf", spec=spec)
    assert "\n" not in str(e.value).replace("\\n", "")
