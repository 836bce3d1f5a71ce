"""`estimate --json` and `recommend --json` against docs/json.md, in both directions: every documented key is
emitted, and every emitted key is documented (the contract other tools read)."""

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.cli import main

DOC = (Path(__file__).resolve().parents[1] / "docs" / "json.md").read_text()
_TICK = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


def section(title: str) -> str:
    parts = re.split(r"^## ", DOC, flags=re.M)
    hits = [p for p in parts if p.split("\n", 1)[0].strip() == title]
    assert len(hits) == 1, f"docs/json.md has no single '## {title}' section"
    return hits[0]


def table(title: str) -> dict[str, str]:
    """First-column keys of a section's table -> the row's meaning (a row `a`, `b` documents both keys)."""
    rows = {}
    for line in section(title).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) < 2 or cells[0] in ("key", "---"):
            continue
        for k in re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)(?:\[\])?`", cells[0]):  # `devices[]`: a list of objects
            rows[k] = "|".join(cells[1:])
    assert rows, title
    return rows


def ticks(text: str) -> set[str]:
    return set(_TICK.findall(text)) - {"null", "true", "false"}


def run(*args: str) -> dict:
    r = CliRunner().invoke(main, list(args))
    assert r.exit_code == 0 and r.exception is None, r.output
    return json.loads(r.output)


ESTIMATES = {
    "llama.cpp": ["estimate", "--model", "gemma-3-4b", "--quant", "Q4_K_M", "--target", "rtx4090", "--json"],
    "vllm": ["estimate", "--model", "gemma-3-4b", "--quant", "bf16", "--engine", "vllm", "--target", "h100", "--json"],
    "transformers": ["estimate", "--model", "gemma-3-4b", "--quant", "bf16", "--engine", "transformers", "--target",
                     "rtx4090", "--json"],
}


def check_plan(plan: dict, from_recommend: bool) -> None:
    rows = table("Plan")
    only_recommend = {k for k, v in rows.items() if v.startswith("`recommend` only")}
    must = set(rows) if from_recommend else set(rows) - only_recommend
    assert set(plan) <= set(rows), ("Plan: emitted but undocumented", set(plan) - set(rows))
    assert must <= set(plan), ("Plan: documented but not emitted", must - set(plan))
    if not from_recommend:  # a "`recommend` only" key estimate still writes is null
        assert all(plan[k] is None for k in only_recommend & set(plan)), {k: plan[k] for k in only_recommend & set(plan)}
    assert set(plan["settings"]) == ticks(rows["settings"]), set(plan["settings"]) ^ ticks(rows["settings"])
    speed_doc = ticks(rows["speed"].split("and the keys of")[0]) | set(table("speed"))  # the row and the "speed" table
    assert set(plan["speed"]) == speed_doc, set(plan["speed"]) ^ speed_doc
    assert set(plan["kv_type"]) == {"k", "v"}
    check_memory(plan["memory"])
    if from_recommend:
        check_plan_utility(plan["utility"])
    else:
        assert plan["utility"] is None


def check_memory(mem: dict) -> None:
    rows = table("memory")
    documented = {k for k in rows if k != "devices"}
    assert set(mem) - {"devices"} == documented, ("memory", set(mem) ^ documented)
    cells_doc = ticks(rows["kv_cells"])
    assert set(mem["kv_cells"]) <= cells_doc, set(mem["kv_cells"]) - cells_doc
    if mem["engine"] == "llama.cpp":
        assert set(mem["kv_cells"]) == {"full", "swa", "streams", "n_ctx"}
    dev_row = rows["devices"]
    sums = {k for k in rows if k.endswith("_bytes")}
    assert len(sums) == 6 and "the six `*_bytes`" in dev_row  # each device carries the six sums of the memory table
    per_device = ticks(dev_row.split("`detail` (")[0]) | sums | {"detail"}
    detail_doc = ticks(dev_row.split("`detail` (")[1])
    for dev in mem["devices"]:
        assert set(dev) == per_device, ("devices[]", set(dev) ^ per_device)
        assert set(dev["detail"]) <= detail_doc, ("devices[].detail undocumented", set(dev["detail"]) - detail_doc)


def check_plan_utility(u: dict) -> None:
    rows = table("PlanUtility (`plan.utility`, `alternatives[].utility`)")
    assert set(u) == set(rows), set(u) ^ set(rows)


@pytest.mark.parametrize("engine", sorted(ESTIMATES))
def test_estimate_json_matches_docs(engine):
    d = run(*ESTIMATES[engine])
    assert set(d) == {"plan"}  # `{"plan": Plan}`
    assert d["plan"]["engine"] == engine
    check_plan(d["plan"], from_recommend=False)


def test_recommend_json_matches_docs():
    d = run("recommend", "--model", "gemma-3-4b", "--target", "rtx4090", "--json")
    block = section("`recommend --json`").split("```")[1]
    top = set(re.findall(r'^\s*"([a-z_]+)":', block, flags=re.M))
    assert set(d) == top - {"emitted"}  # "emitted" only with --emit
    assert set(d["max_context"]) == {"f16", "q8_0"}  # the KV types of the llama.cpp ladder, as documented
    check_plan(d["plan"], from_recommend=True)
    alt_doc = ticks(section("Alternative").split("(why it lost")[0]) | {"reason", "utility"}
    assert d["alternatives"]
    for a in d["alternatives"]:
        assert set(a) == alt_doc, set(a) ^ alt_doc
        if a["utility"] is not None:
            check_plan_utility(a["utility"])
    util = table("Utility (`recommend --json` top level)")
    assert set(d["utility"]) == set(util), set(d["utility"]) ^ set(util)
    assert d["priority"] in ("quality", "speed", "context") and all(isinstance(n, str) for n in d["notes"])


def test_recommend_emit_key_matches_docs(tmp_path):
    d = run("recommend", "--model", "gemma-3-4b", "--target", "rtx4090", "--emit", str(tmp_path / "out"), "--json")
    assert set(d["emitted"]) == {"dir", "files"} and d["emitted"]["files"]
