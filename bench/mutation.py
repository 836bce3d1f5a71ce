"""Mutation testing of the pure modules with mutmut 3, against the fast tests only.

    pip install 'mutmut==3.8.*'
    python bench/mutation.py                                  # every module in SCOPE
    python bench/mutation.py planner/speed.py planner/search.py
    python bench/mutation.py --max-children 2 --json out.json

mutmut changes one operator, constant or call at a time in a copy of the code and runs the tests that
call the changed function (it records which tests reach which function in a first plain run). A mutant
the tests still pass on has "survived": either a test is missing, or the change cannot alter behaviour
(an equivalent mutant). Equivalent ones are listed, each with its reason, in
bench/data/mutation_equivalent.json, matched by module, function and the changed line (not by mutmut's
numbering, which shifts when code is edited); the score counts them out:

    score = killed / (mutants - equivalent)

Mutants without any test reaching them ("no tests") and timeouts that are not kills count as survivors.
Each module runs in its own scratch copy of the repository (--workdir/<module>), against only its own
tests, so the working tree is never touched and one module can be rerun alone (--reuse reports the
others from their last run). The tests run with the root conftest.py's hermetic environment; tests
marked slow never run here.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENT = ROOT / "bench" / "data" / "mutation_equivalent.json"

# The one place that says what is mutated and which fast tests guard it: module -> (test files, functions).
# Functions are the module's pure estimators and parsers ("*": all of them); I/O wrappers, CLI text and the
# calibration-row scoring are left out to keep a run within minutes. Keep each test list to files that run
# in seconds: mutmut reruns the tests that reach a mutated function for every mutant of it.
SCOPE: dict[str, tuple[list[str], list[str]]] = {
    "planner/memory.py": (["tests/test_planner_memory.py", "tests/test_estimators_exact.py"], ["*"]),
    "planner/formats.py": (["tests/test_formats.py", "tests/test_planner_memory.py", "tests/test_gptq_bytes.py"],
                           ["row_bytes", "tensor_bytes", "block_size", "quality_loss", "_allows_quantization", "_gguf_tensor_types",
                            "_category", "_use_more_bits", "_fallback_row", "gguf_tensor_types", "_source_type",
                            "tensor_sizes", "_tensor_sizes", "_is_linear", "gptq_quantized", "gptq_tensor_bytes",
                            "weight_bytes", "_static", "_static_counts"]),
    "planner/speed.py": (["tests/test_speed.py", "tests/test_speed_model.py", "tests/test_estimators_exact.py"],
                         ["class_consts", "engine_factor", "backend_factor", "decode_time", "prefill_time",
                          "engine_pp_factor", "cap", "expected_range", "weights_read_per_token", "_output_bytes",
                          "efficiency_class", "_kv_row", "_kv_read_bytes", "prefill_params", "attention_flops",
                          "estimate_speed", "moe_factor", "moe_pp_factor", "build_era", "layer_factor",
                          "_unread_expert_bytes", "_devices_for"]),
    "planner/search.py": (["tests/test_estimators_exact.py", "tests/test_speed.py"],
                          ["plan", "_fits", "max_context", "vllm_tensor_parallel", "gpus_per_host"]),
    "planner/utility.py": (["tests/test_estimators_exact.py", "tests/test_recommend_utility.py"],
                           ["quant_penalty", "make_utility", "terms", "_tiers", "rank"]),
    "profiles/unified.py": (["tests/test_estimators_exact.py", "tests/test_profiles_targets.py"], ["*"]),
    "profiles/sources/system.py": (["tests/test_detect_parsers.py", "tests/test_estimators_exact.py"],
                                   ["parse_system", "parse_cgroup", "_ancestors", "board_target", "jetson_gpu_name"]),
    "profiles/detect.py": (["tests/test_detect_machine.py", "tests/test_estimators_exact.py"],
                           ["_cgroup_limit", "_hardware", "_enrich", "_mig_compute_share"]),
}
TEST_MAP = {module: tests for module, (tests, _) in SCOPE.items()}
# Lines whose statements are messages, not arithmetic: a changed word in an error or a note is not a bug the
# fast tests should pin (the CLI tests check first lines of messages separately).
SKIP_LINES = [r"^\s*raise \w+\(", r"hint=", r"\bnotes\.(append|insert)\(", r"\bbound\.append\(", r"^\s*basis=",
              r"^\s*expected_error=", r"^\s*#", r"^\s*(basis_cls|rng) = ", r"^\s*bound="]
# Tests in those files that are slow or time themselves (a mutation run loads the machine).
DESELECT = ["-m", "not slow",
            "--deselect", "tests/test_speed.py::test_recommend_plot_writes_png",
            "--deselect", "tests/test_detect_machine.py::test_detect_is_fast_and_imports_nothing_heavy",
            "--deselect", "tests/test_detect_machine.py::test_bench_stores_measured_bandwidth"]
COPY = ["planner", "profiles", "quantize", "tests", "conftest.py", "docs", "bench", "README.md"]
STATUS_OK = {"killed", "timeout", "caught by type check"}


def _mutmut() -> list[str]:
    exe = shutil.which("mutmut", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if not exe:
        raise SystemExit("mutmut is not installed: pip install 'mutmut==3.8.*'")
    return [exe]


def prepare(workdir: Path, modules: list[str], tests: list[str]) -> None:
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    for rel in COPY:
        src, dst = ROOT / rel, workdir / rel
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.gguf"))
        elif src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    (workdir / "mutation_memos.py").write_text(PLUGIN)
    pyproject = (ROOT / "pyproject.toml").read_text()
    pyproject += "\n[tool.mutmut]\n" + "\n".join([
        'source_paths = ["planner", "profiles"]',
        f"only_mutate = {json.dumps(modules)}",
        f"do_not_mutate_patterns = {json.dumps(SKIP_LINES)}",
        f"also_copy = {json.dumps(['quantize', 'conftest.py', 'docs', 'bench', 'README.md', 'mutation_memos.py'])}",
        f"pytest_add_cli_args = {json.dumps(['-p', 'no:cacheprovider', '-p', 'mutation_memos', '-q', *DESELECT])}",
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
        "use_git_change_detection = false",
    ]) + "\n"
    tomllib.loads(pyproject)
    (workdir / "pyproject.toml").write_text(pyproject)


# mutmut forks every mutant's run from a process that has already run the tests once, so a memo filled then
# (formats._SIZES_CACHE, memory._WEIGHTS_CACHE, lru_cache'd tables, a test file's own _CACHE of CLI answers
# such as tests/test_recommend_utility.py's) would hand a mutant the unmutated answer. This plugin empties the
# memos of the mutated module and of the running test's own file before every test (only those: refilling the
# others, e.g. the formats memo while memory.py is mutated, would only slow each run).
PLUGIN = '''"""Loaded with -p by bench/mutation.py: no memo outlives a test."""
import os
import sys
import weakref

import pytest

MUTATED = os.environ.get("GEMMA_PLAN_MUTATED_MODULE", "")


def _clear(mod, owner):
    for attr, value in list(vars(mod).items()) if mod is not None else []:
        if attr.endswith("_CACHE") and isinstance(value, (dict, weakref.WeakKeyDictionary)):
            value.clear()
        elif hasattr(value, "cache_clear") and getattr(value, "__module__", "") == owner:
            value.cache_clear()


@pytest.fixture(autouse=True)
def _fresh_memos(request):
    _clear(sys.modules.get(MUTATED), MUTATED)
    test_module = getattr(request, "module", None)
    _clear(test_module, getattr(test_module, "__name__", ""))
    yield
'''
_RESULT = re.compile(r"^\s*(\S+): (.+)$")


def mutant_globs(modules: list[str]) -> list[str]:
    """mutmut's names for the mutants in scope: 'planner.speed.x_estimate_speed__mutmut_*' per function."""
    out = []
    for module in modules:
        dotted = module[:-3].replace("/", ".")
        for func in SCOPE[module][1]:
            out.append(f"{dotted}.*" if func == "*" else f"{dotted}.x_{func}__mutmut_*")
    return out


def collect(workdir: Path, cmd: list[str], globs: list[str]) -> dict[str, str]:
    out = subprocess.run(cmd + ["results", "--all", "true"], cwd=workdir, capture_output=True, text=True, check=True)
    found = {m.group(1): m.group(2).strip() for line in out.stdout.splitlines() if (m := _RESULT.match(line))}
    return {k: v for k, v in found.items() if any(fnmatch.fnmatch(k, g) for g in globs)}


def diff_of(workdir: Path, cmd: list[str], name: str) -> str:
    out = subprocess.run(cmd + ["show", name], cwd=workdir, capture_output=True, text=True)
    return out.stdout


def changed_lines(diff: str) -> tuple[list[str], list[str]]:
    """The removed and added source lines of a mutant's diff, stripped (mutmut's diff header excluded)."""
    minus = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("-") and not ln.startswith("---")]
    plus = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    return minus, plus


def function_of(name: str) -> tuple[str, str]:
    """'planner.speed.x_decode_tps__mutmut_3' -> ('planner/speed.py', 'decode_tps'); methods keep their class."""
    base = name.rsplit("__mutmut_", 1)[0]
    module, _, func = base.rpartition(".")
    if "ǁ" in module:  # class methods: module.xǁClassǁmethod
        module, _, func = base.partition(".xǁ")[0], None, base.partition(".xǁ")[2].replace("ǁ", ".")
    func = func[2:] if func.startswith("x_") else func
    return module.replace(".", "/") + ".py", func


def load_equivalent() -> list[dict]:
    if not EQUIVALENT.is_file():
        return []
    return json.loads(EQUIVALENT.read_text())["equivalent"]


def is_equivalent(entries: list[dict], module: str, func: str, minus: list[str], plus: list[str]) -> dict | None:
    for e in entries:
        if e["module"] == module and e["function"] == func and e["from"] == minus and e["to"] == plus:
            return e
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modules", nargs="*", help="source files to mutate (default: every key of SCOPE)")
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "gemma-plan-mutation")
    ap.add_argument("--max-children", type=int, default=2, help="parallel mutant runs (default 2)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--reuse", action="store_true", help="report on the results already in --workdir, do not run")
    ap.add_argument("--rerun", nargs="*", default=[], help="with --reuse: run these modules again")
    ap.add_argument("--quiet", action="store_true", help="hide mutmut's progress output")
    args = ap.parse_args(argv)

    modules = args.modules or list(SCOPE)
    unknown = [m for m in modules if m not in SCOPE]
    if unknown:
        raise SystemExit(f"no tests mapped for {', '.join(unknown)}; add the module, its fast test files and its functions "
                         f"to SCOPE in {Path(__file__).name}")
    cmd = _mutmut()
    results: dict[str, tuple[str, Path]] = {}
    for module in modules:
        tests = [t for t in SCOPE[module][0] if (ROOT / t).is_file()]
        work = args.workdir / module.replace("/", "_")[:-3]
        if not args.reuse or module in args.rerun:
            prepare(work, [module], tests)
            env = {**os.environ, "PYTHONPATH": "", "GEMMA_PLAN_MUTATED_MODULE": module[:-3].replace("/", ".")}
            print(f"== {module}: {' '.join(tests)}", flush=True)
            r = subprocess.run(cmd + ["run", "--max-children", str(args.max_children), *mutant_globs([module])],
                               cwd=work, env=env, stdout=subprocess.DEVNULL if args.quiet else None)
            if r.returncode != 0:
                print(f"mutmut run exited {r.returncode} for {module}", file=sys.stderr)
        if (work / "mutants").is_dir():
            results.update({k: (v, work) for k, v in collect(work, cmd, mutant_globs([module])).items()})
        else:
            print(f"no results for {module} in {work}", file=sys.stderr)
    entries = load_equivalent()
    rows, counts = [], {"killed": 0, "survived": 0, "equivalent": 0}
    per_module: dict[str, dict[str, int]] = {}
    for name, (status, work) in sorted(results.items()):
        module, func = function_of(name)
        pm = per_module.setdefault(module, {"mutants": 0, "killed": 0, "equivalent": 0})
        pm["mutants"] += 1
        if status in STATUS_OK:
            counts["killed"] += 1
            pm["killed"] += 1
            continue
        minus, plus = changed_lines(diff_of(work, cmd, name))
        eq = is_equivalent(entries, module, func, minus, plus)
        counts["equivalent" if eq else "survived"] += 1
        pm["equivalent"] += bool(eq)
        rows.append({"mutant": name, "status": status, "module": module, "function": func, "from": minus, "to": plus,
                     "equivalent": eq["reason"] if eq else None})
    scored = len(results) - counts["equivalent"]
    score = counts["killed"] / scored if scored else 0.0
    print()
    for module, pm in sorted(per_module.items()):
        n = pm["mutants"] - pm["equivalent"]
        print(f"{module:28} mutants {pm['mutants']:4}  killed {pm['killed']:4}  equivalent {pm['equivalent']:3}  "
              f"score {pm['killed'] / n if n else 0:.1%}")
    print(f"mutants {len(results)}  killed {counts['killed']}  equivalent {counts['equivalent']}  "
          f"surviving {counts['survived']}  score {score:.1%} (killed / (mutants - equivalent))")
    for r in rows:
        if r["equivalent"] is None:
            print(f"SURVIVED {r['mutant']} [{r['status']}] {r['module']}:{r['function']}")
            print("".join(f"    - {a}\n" for a in r["from"]) + "".join(f"    + {b}\n" for b in r["to"]), end="")
    if args.json:
        args.json.write_text(json.dumps({"modules": modules, **counts, "per_module": per_module, "mutants": len(results),
                                         "score": score, "not_killed": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
