"""What a person reads: every command rendered at 80 and 120 columns keeps names and headers whole, numbers
in their columns, and recommend fits one screen; a .gguf model brings its own --quant; docs/cli.md is current."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from planner.catalog import all_models
from planner.cli import main
from test_catalog_cli import _write_gguf  # tests/ is on sys.path (pytest rootdir import mode)

ROOT = Path(__file__).resolve().parent.parent
WIDTHS = (80, 120)
FIXTURES = Path(__file__).parent / "fixtures" / "hardware"


def run(*args, columns: int = 80):
    return CliRunner(env={"COLUMNS": str(columns)}).invoke(main, [str(a) for a in args])


def _lines(text: str) -> list[str]:
    return text.rstrip("\n").split("\n")


def _whole(name: str, text: str) -> bool:
    """name appears as a whole word: not cut, not glued to another name."""
    return re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", text) is not None


def assert_readable(text: str, width: int, names=(), headers=()):
    assert "…" not in text, "a cell was cut with an ellipsis:\n" + text
    for line in _lines(text):
        assert len(line.rstrip()) <= width, f"wider than {width} columns: {line!r}"
    for n in names:
        assert _whole(n, text), f"{n!r} is missing or cut:\n{text}"
    for h in headers:
        assert any(re.search(rf"(^|\s){re.escape(h)}(\s|$)", line) for line in _lines(text)), f"header {h!r} is cut:\n{text}"


@pytest.mark.parametrize("width", WIDTHS)
def test_models_keep_every_name_and_header(width):
    r = run("models", columns=width)
    assert r.exit_code == 0, r.output
    names = [m.name for m in all_models()]
    assert_readable(r.output, width, names, ("model", "params", "active", "context", "layers (S/F)", "KV layers"))
    # the notes are shown: beside the table on a wide terminal, on their own line at 80 columns
    if width == 80:
        assert re.search(r"^gemma-3n-e2b: per-layer embeddings", r.output, re.M)
    else:
        assert "notes" in _lines(r.output)[1]


@pytest.mark.parametrize("width", WIDTHS)
def test_targets_keep_every_name_and_header(width):
    r = run("targets", columns=width)
    assert r.exit_code == 0, r.output
    names = [t["name"] for t in json.loads(run("targets", "--json").output)["targets"]]
    assert len(names) >= 40
    assert_readable(r.output, width, names, ("name", "kind", "accelerators", "memory", "GB/s", "RAM"))
    for n in names:  # one row per target, its name starting the row
        assert re.search(rf"^{re.escape(n)}\s", r.output, re.M), n
    assert "GiB" in _lines(r.output)[0] and "GB/s" in _lines(r.output)[0], "units are in the title"
    for t in json.loads(run("targets", "--json").output)["targets"]:  # unified memory is starred, not spelled out
        row = next(line for line in _lines(r.output) if line.startswith(t["name"] + " "))
        assert ("*" in row) == any(d["unified"] for d in t["devices"]), row


MEMORY_HEADERS = ("device", "weights", "KV", "total", "usable", "fill")


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("target", ["rtx4090", "2x-rtx3090", "rtx-pro-6000", "m4-max-128gb", "cpu-16gb"])
def test_estimate_memory_table(width, target):
    r = run("estimate", "-m", "31b", "-q", "Q4_K_M", "--target", target, columns=width)
    assert r.exit_code == 0, r.output
    assert_readable(r.output, width, ["gemma-4-31b", target, "Q4_K_M"], MEMORY_HEADERS)
    plan = json.loads(run("estimate", "-m", "31b", "-q", "Q4_K_M", "--target", target, "--json").output)["plan"]
    words = r.output.split()
    for d in plan["memory"]["devices"]:
        if d["total_bytes"] or d["device"] == "CPU":
            # a long device name may wrap at its spaces, never inside a word
            assert all(w in words for w in d["device"].split()), d["device"]
            assert f"{d['total_bytes'] / 2**30:.2f}" in words
    header = next(line for line in _lines(r.output) if line.startswith("device "))
    if width == 120 and target != "rtx-pro-6000":  # a 42-character device name leaves no room for five buffer columns
        assert header.split()[1:6] == ["weights", "KV", "compute", "output", "overhead"], "a wide terminal shows every buffer"
    else:
        assert header.split()[1:4] == ["weights", "KV", "other"] and "other = compute + output + overhead" in r.output
    bar = [line for line in _lines(r.output) if "█" in line or "·" in line]
    assert bar and all(re.search(r"[█·]{8,}\s+\d+%", line) for line in bar), "the fill bar is kept"


def test_numbers_are_right_aligned():
    r = run("estimate", "-m", "31b", "-q", "Q4_K_M", "--target", "2x-rtx3090", columns=80)
    rows = [line for line in _lines(r.output) if line.startswith(("GeForce", "CPU"))]
    assert len(rows) == 3
    ends = {m.end() for line in rows for m in [re.search(r"\d+\.\d\d(?=\s+\d+\.\d\d\s+[█·])", line)] if m}
    assert len(ends) == 1, "every device's total ends in the same column:\n" + "\n".join(rows)


def _visual_rows(text: str, width: int) -> int:
    return sum(max(1, math.ceil(len(line.rstrip()) / width)) for line in _lines(text))


def test_recommend_fits_one_screen_in_the_order_a_person_asks():
    r = run("recommend", "--model", "31b", "--target", "rtx4090", columns=80)
    assert r.exit_code == 0, r.output
    out = r.output
    assert _visual_rows(out, 80) <= 50, f"{_visual_rows(out, 80)} rows:\n{out}"
    assert_readable(out, 80, ["gemma-4-31b", "rtx4090"], MEMORY_HEADERS + ("KV type", "max context", "model", "ctx", "tok/s"))
    marks = ["fits rtx4090", "memory per device", "speed:", "maximum context", "alternatives (5 of", "run it", "llama-server -m"]
    pos = [out.find(m) for m in marks]
    assert -1 not in pos and pos == sorted(pos), list(zip(marks, pos))
    data = json.loads(run("recommend", "--model", "31b", "--target", "rtx4090", "--json").output)
    alts = data["alternatives"]
    assert len(alts) > 5
    shown = out[out.find("alternatives"):out.find("run it")]
    for a in alts[:5]:  # each of the top five with its reason on one line
        assert any(line.strip() == a["reason"] or line.rstrip().endswith(a["reason"]) for line in _lines(shown)), a["reason"]
    assert sum(1 for line in _lines(shown) if line.startswith("gemma-4-31b ")) == 5
    # the command to run comes last: nothing follows it but its own continuation lines
    lines = _lines(out)
    start = max(i for i, line in enumerate(lines) if line.startswith("  llama-server -m"))
    assert all(line.startswith("    -") for line in lines[start + 1:])
    assert all(line.endswith(" \\") for line in lines[start:-1]) and not lines[-1].endswith("\\")


def test_recommend_all_lists_every_alternative():
    data = json.loads(run("recommend", "--model", "31b", "--target", "rtx4090", "--json").output)
    r = run("recommend", "--model", "31b", "--target", "rtx4090", "--all", columns=120)
    assert r.exit_code == 0, r.output
    assert "--all lists" not in r.output
    shown = r.output[r.output.find("alternatives"):r.output.find("run it")]
    assert sum(1 for line in _lines(shown) if line.startswith("gemma-4-31b ")) == len(data["alternatives"])
    assert all(a["reason"] in shown for a in data["alternatives"])


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("args", [
    ("--model", "31b", "--target", "rtx4090"),
    ("--target", "pixel-9"),
    ("--model", "27b", "--target", "2x-node-8x-h100", "--engine", "vllm"),
    ("--model", "31b", "--target", "galaxy-s24"),  # nothing fits: the closest options
    ("--target", "rtx4090", "--explain"),  # the utility's terms wrap too
])
def test_recommend_keeps_names_whole(width, args):
    r = run("recommend", *args, columns=width)
    data = json.loads(run("recommend", *args, "--json").output)
    assert r.exit_code == (0 if data["plan"] else 3), r.output
    names = {a["model"] for a in data["alternatives"][:5]} | {args[args.index("--target") + 1]}
    if data["plan"]:
        names.add(data["plan"]["model"])
    assert_readable(r.output, width, sorted(names))


def test_wrapped_run_command_is_the_same_shell_command(tmp_path):
    """The command is broken with `` \\`` continuations to fit 80 columns; bash reads back the same words."""
    from planner.report import shell_wrap

    data = json.loads(run("recommend", "--model", "31b", "--target", "2x-rtx3090", "--emit", tmp_path / "e", "--json").output)
    line = json.loads((tmp_path / "e" / "recipe.json").read_text())["recipes"]["llama-server"]["steps"][0]["shell"]
    assert data["plan"]
    for width in (40, 80, 120):
        parts = shell_wrap(line, width)
        assert all(len(p) <= width for p in parts) and (len(parts) > 1) == (len(line) + 2 > width)
        words = lambda text: subprocess.run(["bash", "-c", 'printf "%s\\n" ' + text], capture_output=True, text=True,  # noqa: E731
                                            check=True).stdout
        assert words("\n".join(parts)) == words(line)
    quoted = "HF_HOME='/a b' vllm serve \"${MODEL_DIR}\"'/x y' --max-model-len 32768 --gpu-memory-utilization 0.9"
    parts = shell_wrap(quoted, 40)
    assert len(parts) > 1 and "--max-model-len 32768 \\" in "\n".join(parts)
    assert shell_wrap("echo 'open", 10) == ["  echo 'open"], "text it cannot split safely is left whole"


@pytest.mark.parametrize("width", WIDTHS)
def test_detect_with_accelerators(width, monkeypatch):
    from planner.commands.detect import detect
    from profiles.detect import Readings, build_report
    from profiles.units import GiB

    for fixture, names in (("nvml_mig_a100.json", ["A100-SXM4-40GB", "[MIG", "3g.20gb]"]),
                           ("nvml_2x_rtx3090.json", ["NVIDIA GeForce RTX 3090"])):
        r = Readings(system="Linux", machine="x86_64", ram_total=64 * GiB, ram_available=60 * GiB, cpu_count=16)
        r.texts["nvml"] = (FIXTURES / fixture).read_text()
        report = build_report(r)
        monkeypatch.setattr("profiles.detect.detect", lambda **kw: report)
        res = CliRunner(env={"COLUMNS": str(width)}).invoke(detect, [], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        assert_readable(res.output, width, names, ("#", "device", "backend", "total", "free", "GB/s", "TFLOPS", "CC"))


@pytest.mark.parametrize("width", WIDTHS)
def test_validate_table(width, tmp_path):
    out = tmp_path / "r"
    assert run("recommend", "--model", "27b", "--target", "rtx4090", "--emit", out).exit_code == 0
    r = run("validate", out, "--target", "rtx4090", columns=width)
    assert r.exit_code == 4  # the placeholder model file is not there
    assert_readable(r.output, width, ["rtx4090", "recipe llama-server", "recipe llama-cpp-python", "engine version"],
                    ("check", "result", "detail"))


# ---------------------------------------------------------------- --quant from the GGUF file


def _write_q8_gguf(path: Path) -> Path:
    """A 1-layer Gemma 3 GGUF whose matrices are Q8_0 (general.file_type 7), written with gguf-py."""
    import gguf

    w = gguf.GGUFWriter(str(path), "gemma3")
    H, F, V = 256, 512, 512
    for add, v in ((w.add_block_count, 1), (w.add_embedding_length, H), (w.add_feed_forward_length, F), (w.add_head_count, 2),
                   (w.add_head_count_kv, 1), (w.add_key_length, 128), (w.add_value_length, 128), (w.add_context_length, 2048),
                   (w.add_sliding_window, 128), (w.add_file_type, 7)):
        add(v)
    w.add_array("gemma3.attention.sliding_window_pattern", [False])
    rng = np.random.default_rng(0)

    def q8(shape):
        return gguf.quants.quantize(rng.standard_normal(shape).astype(np.float32), gguf.GGMLQuantizationType.Q8_0)

    w.add_tensor("token_embd.weight", q8((V, H)), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("output_norm.weight", np.ones(H, dtype=np.float32))
    for n, shape in (("attn_q", (256, H)), ("attn_k", (128, H)), ("attn_v", (128, H)), ("attn_output", (H, 256)),
                     ("ffn_gate", (F, H)), ("ffn_up", (F, H)), ("ffn_down", (H, F))):
        w.add_tensor(f"blk.0.{n}.weight", q8(shape), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    for n in ("attn_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm"):
        w.add_tensor(f"blk.0.{n}.weight", np.ones(H, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("writer,own", [(_write_gguf, "F16"), (_write_q8_gguf, "Q8_0")])
def test_estimate_gguf_without_quant_uses_the_file_type(tmp_path, writer, own):
    path = writer(tmp_path / "m.gguf")
    r = run("estimate", "--model", path, "--target", "rtx4090", "--json")
    assert r.exit_code == 0, r.output
    plan = json.loads(r.output)["plan"]
    assert plan["weight_format"] == own
    assert plan["weight_file_bytes"] == sum(t.n_bytes for t in __import__("gguf").GGUFReader(str(path)).tensors)
    table = run("estimate", "--model", path, "--target", "rtx4090", columns=80)
    assert table.exit_code == 0 and f"m {own} fits rtx4090" in table.output
    same = run("estimate", "--model", path, "--target", "rtx4090", "--quant", own.lower(), "--json")
    assert same.exit_code == 0 and json.loads(same.output)["plan"] == plan
    rec = run("recommend", "--model", path, "--target", "rtx4090", "--json")
    assert rec.exit_code == 0 and json.loads(rec.output)["plan"]["weight_format"] == own, "recommend plans the file as it is"


def test_conflicting_quant_names_both(tmp_path):
    path = _write_q8_gguf(tmp_path / "m.gguf")
    for cmd in ("estimate", "recommend"):
        r = run(cmd, "--model", path, "--target", "rtx4090", "--quant", "Q4_K_M")
        assert r.exit_code == 1
        assert "Q4_K_M" in r.output and "Q8_0" in r.output and str(path) in r.output
        assert len(r.output.strip().splitlines()) == 1 and isinstance(r.exception, SystemExit)


def test_estimate_without_quant_needs_a_gguf():
    r = run("estimate", "--model", "31b", "--target", "rtx4090")
    assert r.exit_code != 0 and "--quant" in r.output and len(r.output.strip().splitlines()) == 1
    r = run("recommend", "--model", "31b", "--target", "rtx4090", "--json")
    assert r.exit_code == 0, "recommend never needs --quant"


def test_estimate_real_converted_gguf_without_quant(tiny_gguf):
    """The project's own converter output (a tiny random Gemma 3) plans as the file type it wrote."""
    path = tiny_gguf("gemma3", outtype="f16")
    r = run("estimate", "--model", path, "--target", "rtx4090", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["plan"]["weight_format"] == "F16"


# ---------------------------------------------------------------- docs/cli.md


def test_cli_reference_is_current():
    # a fresh process, as a person runs it: click caches each command's help option on first use, so help
    # rendered after other tests invoked `detect` on its own would differ
    fresh = subprocess.run([sys.executable, "-m", "planner.cli_docs"], capture_output=True, text=True, check=True).stdout
    doc = (ROOT / "docs" / "cli.md").read_text()
    assert doc == fresh, "docs/cli.md is stale: run `python -m planner.cli_docs > docs/cli.md`"
    for cmd in ("models", "targets", "estimate", "recommend", "validate", "detect", "quantize", "bench speed"):
        assert f"## gemma-plan {cmd}\n" in doc
    assert "--all" in doc and "its own type" in doc


def test_names_from_files_are_shown_literally(tmp_path):
    """A file stem that looks like rich markup is printed as it is, not styled away."""
    path = _write_gguf(tmp_path / "g[red]x.gguf")
    for args in (("estimate", "--model", path, "--target", "rtx4090"), ("recommend", "--model", path, "--target", "rtx4090")):
        r = run(*args, columns=80)
        assert r.exit_code == 0, r.output
        assert "g[red]x F16 fits rtx4090" in r.output


def test_phone_run_it_names_the_script_that_sets_its_variables(tmp_path):
    """LiteRT-LM's steps use the downloaded bundle's name, set by the script: the screen shows the script to run,
    never a command with an unset ${BUNDLE}."""
    r = run("recommend", "--target", "pixel-9")
    assert r.exit_code == 0, r.output
    run_it = r.output[r.output.rfind("run it"):]
    assert "${BUNDLE}" not in run_it and "sh DIR/run-litert-android.sh" in run_it
    out = tmp_path / "phone"
    r = run("recommend", "--target", "pixel-9", "--emit", out)
    assert r.exit_code == 0, r.output
    joined = re.sub(r" \\\n\s+", " ", r.output)  # a long path is wrapped with a shell continuation
    assert f"sh {out}/run-litert-android.sh" in joined and (out / "run-litert-android.sh").is_file()


def test_table_width_is_added_up_as_rich_measures_it():
    """The report decides between its wide and narrow layouts from a table's natural width, added up from the
    cells instead of rendered: it must equal rich's own measurement for every shape the report builds (no-wrap
    and wrapping columns, minimum widths, markup, multi-line and wide characters)."""
    import random

    from rich.console import Console
    from rich.measure import Measurement
    from rich.text import Text

    from planner import report

    con = Console(width=80)
    rng = random.Random(7)
    for _ in range(300):
        t = report._table()
        n = rng.randint(1, 8)
        for _ in range(n):
            t.add_column("h" * rng.randint(1, 10), justify=rng.choice(["left", "right"]), no_wrap=rng.random() < 0.7,
                         min_width=rng.choice([None, rng.randint(1, 30)]))
        for _ in range(rng.randint(0, 5)):
            t.add_row(*[rng.choice(["x " * rng.randint(0, 20), "[bold]ab[/] c", Text("yy\nzzzz"), "é" * rng.randint(0, 5),
                                    "模型" * rng.randint(0, 3)]) for _ in range(n)])
        if rng.random() < 0.5:
            report._freeze(t)
        assert report._width(con, t) == Measurement.get(con, con.options.update(max_width=10_000), t).maximum
