"""Mutation testing of the pure modules with mutmut 3, against the fast tests only.

    pip install 'mutmut==3.8.*'
    python bench/mutation.py                                  # every module in TEST_MAP
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
The run happens in a scratch copy of the repository (--workdir), so the working tree is never touched,
and the tests run with the root conftest.py's hermetic environment. Tests marked slow never run here.
"""

from __future__ import annotations

import argparse
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

# The one place that says which fast tests guard which module. Keep each list to tests that run in
# seconds: mutmut reruns the ones that reach a mutated function for every mutant of it.
TEST_MAP: dict[str, list[str]] = {
    "planner/memory.py": ["tests/test_planner_memory.py", "tests/test_estimators_exact.py", "tests/test_formats.py"],
    "planner/formats.py": ["tests/test_formats.py", "tests/test_planner_memory.py", "tests/test_gptq_bytes.py"],
    "planner/speed.py": ["tests/test_speed.py", "tests/test_estimators_exact.py"],
    "planner/search.py": ["tests/test_recommend_utility.py", "tests/test_estimators_exact.py",
                          "tests/test_planner_memory.py"],
    "profiles/detect.py": ["tests/test_detect_parsers.py", "tests/test_detect_machine.py",
                           "tests/test_estimators_exact.py"],
    "profiles/unified.py": ["tests/test_profiles_targets.py", "tests/test_estimators_exact.py"],
}
# Tests in those files that are slow for a mutation run (engine imports, a real bandwidth measurement);
# they still run in the normal suite.
DESELECT = ["-m", "not slow", "--deselect", "tests/test_detect_machine.py::test_bench_stores_measured_bandwidth",
            "--deselect", "tests/test_speed.py::test_recommend_plot_writes_png"]
COPY = ["planner", "profiles", "quantize", "tests", "conftest.py", "docs", "bench/data", "README.md"]
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
    pyproject = (ROOT / "pyproject.toml").read_text()
    pyproject += "\n[tool.mutmut]\n" + "\n".join([
        'source_paths = ["planner", "profiles"]',
        f"only_mutate = {json.dumps(modules)}",
        f"also_copy = {json.dumps(['quantize', 'conftest.py', 'docs', 'bench', 'README.md'])}",
        f"pytest_add_cli_args = {json.dumps(['-p', 'no:cacheprovider', '-q', *DESELECT])}",
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
        "use_git_change_detection = false",
    ]) + "\n"
    tomllib.loads(pyproject)
    (workdir / "pyproject.toml").write_text(pyproject)


_RESULT = re.compile(r"^\s*(\S+): (.+)$")


def collect(workdir: Path, cmd: list[str]) -> dict[str, str]:
    out = subprocess.run(cmd + ["results", "--all", "true"], cwd=workdir, capture_output=True, text=True, check=True)
    return {m.group(1): m.group(2).strip() for line in out.stdout.splitlines() if (m := _RESULT.match(line))}


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
    ap.add_argument("modules", nargs="*", help="source files to mutate (default: every key of TEST_MAP)")
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "gemma-plan-mutation")
    ap.add_argument("--max-children", type=int, default=1, help="parallel mutant runs (default 1)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--reuse", action="store_true", help="report on the results already in --workdir, do not run")
    args = ap.parse_args(argv)

    modules = args.modules or list(TEST_MAP)
    unknown = [m for m in modules if m not in TEST_MAP]
    if unknown:
        raise SystemExit(f"no tests mapped for {', '.join(unknown)}; add the module and its fast test files to TEST_MAP "
                         f"in {Path(__file__).name}")
    tests = sorted({t for m in modules for t in TEST_MAP[m] if (ROOT / t).is_file()})
    cmd = _mutmut()
    if not args.reuse:
        prepare(args.workdir, modules, tests)
        env = {**os.environ, "PYTHONPATH": ""}
        r = subprocess.run(cmd + ["run", "--max-children", str(args.max_children)], cwd=args.workdir, env=env)
        if r.returncode != 0:
            print(f"mutmut run exited {r.returncode}", file=sys.stderr)
    results = collect(args.workdir, cmd)
    entries = load_equivalent()
    rows, counts = [], {"killed": 0, "survived": 0, "equivalent": 0}
    for name, status in sorted(results.items()):
        module, func = function_of(name)
        if status in STATUS_OK:
            counts["killed"] += 1
            continue
        minus, plus = changed_lines(diff_of(args.workdir, cmd, name))
        eq = is_equivalent(entries, module, func, minus, plus)
        counts["equivalent" if eq else "survived"] += 1
        rows.append({"mutant": name, "status": status, "module": module, "function": func, "from": minus, "to": plus,
                     "equivalent": eq["reason"] if eq else None})
    scored = len(results) - counts["equivalent"]
    score = counts["killed"] / scored if scored else 0.0
    print(f"\nmodules: {' '.join(modules)}")
    print(f"tests:   {' '.join(tests)}")
    print(f"mutants {len(results)}  killed {counts['killed']}  equivalent {counts['equivalent']}  "
          f"surviving {counts['survived']}  score {score:.1%} (killed / (mutants - equivalent))")
    for r in rows:
        if r["equivalent"] is None:
            print(f"SURVIVED {r['mutant']} [{r['status']}] {r['module']}:{r['function']}")
            for a, b in zip(r["from"], r["to"]):
                print(f"    - {a}\n    + {b}")
    if args.json:
        args.json.write_text(json.dumps({"modules": modules, "tests": tests, **counts, "mutants": len(results),
                                         "score": score, "not_killed": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
