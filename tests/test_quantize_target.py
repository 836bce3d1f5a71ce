"""`gemma-plan quantize --target T` without --model picks the model recommend picks for T; offline with an empty
Hugging Face cache it names the exact download it needs, on one line, and exits non-zero."""

import os
import subprocess
import sys


def _run(tmp_path, *args):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "planner.cli", "quantize", *args], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tmp_path)


def test_quantize_target_without_model_names_the_model_and_the_download(tmp_path):
    r = _run(tmp_path, "--target", "rtx4090")
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("no --model given: producing gemma-4-31b")
    assert len(lines) == 2 and lines[1].startswith("Error: google/gemma-4-31B-it is not in the Hugging Face cache")
    assert "hf download google/gemma-4-31B-it --include" in lines[1] and "Missing option" not in r.stderr


def test_quantize_from_recipe_plans_the_file_the_recipe_loads(tmp_path):
    emit = tmp_path / "e"
    r = subprocess.run([sys.executable, "-m", "planner.cli", "recommend", "--model", "31b", "--target", "rtx4090", "--emit", str(emit)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    r = _run(tmp_path, "--from-recipe", str(emit / "recipe.json"))
    assert r.returncode != 0 and "hf download google/gemma-4-31B-it" in r.stderr
    r = _run(tmp_path, "--from-recipe", str(emit / "recipe.json"), "--model", "31b")
    assert r.returncode != 0 and "--from-recipe names the model itself" in r.stderr
