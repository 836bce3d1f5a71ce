"""Flag tables of engines that cannot run here, read from their own source, and a checker for argv lists.

    python bench/engine_flags.py lms    SRC_DIR --version "0.3.43 (07b7252)" [--out bench/data/engine_flags/lms.json]
    python bench/engine_flags.py ollama SRC_DIR --version "v0.33.0-rc2 (fb30760)"
    python bench/engine_flags.py litert SRC_DIR --version "v0.9.0-alpha02 (6c18c97)"

SRC_DIR is a checkout of the engine at that version (``git archive`` of a mirror is enough):
- lms (github.com/lmstudio-ai/lms): commander.js commands in ``src/subcommands/*.ts`` (``.name()``,
  ``.option()``/``new Option()``, ``.argument()``) plus the option helpers they call
  (``addLogLevelOptions``, ``addCreateClientOptions``); nested commands are named "parent child".
- ollama (github.com/ollama/ollama): cobra commands in ``cmd/cmd.go`` (``Use:`` and ``X.Flags().Kind(...)``),
  the environment variables ``envconfig/config.go`` reads, and the Modelfile ``PARAMETER`` names
  (json tags of ``api.Options`` and ``api.Runner`` in ``api/types.go``).
- litert (github.com/google-ai-edge/LiteRT-LM): the absl flags of ``runtime/engine/litert_lm_main.cc``.
The tables are committed as data (bench/data/engine_flags/); tests check every rendered argv with
``check_argv``. Regular expressions over source text, not a TypeScript/Go/C++ parser: each pattern is
the one form these files use, and the script fails loudly when a file yields no command.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Optional

TABLE_DIR = Path(__file__).resolve().parent / "data" / "engine_flags"
SOURCES = {"lms": "github.com/lmstudio-ai/lms", "ollama": "github.com/ollama/ollama",
           "litert": "github.com/google-ai-edge/LiteRT-LM"}

_STR = r'"((?:[^"\\]|\\.)*)"'


# ---------------------------------------------------------------- lms (commander.js)


def _commander_spec(spec: str) -> tuple[list[str], bool]:
    """'-c, --context-length <length>' -> (['-c', '--context-length'], takes a value)."""
    names = re.findall(r"(--?[A-Za-z0-9][A-Za-z0-9-]*)", spec.split("<")[0].split("[")[0])
    return names, "<" in spec or "[" in spec


def _ts_options(text: str) -> list[tuple[list[str], bool]]:
    out = []
    for m in re.finditer(r"(?:\.option|new Option)\(\s*" + _STR, text):
        names, value = _commander_spec(m.group(1))
        if names:
            out.append((names, value))
    return out


def _ts_helpers(files: list[Path]) -> dict[str, list[tuple[list[str], bool]]]:
    """export function addXOptions(command) { ... }: the options each helper adds."""
    helpers = {}
    for f in files:
        text = f.read_text(encoding="utf-8")
        for m in re.finditer(r"export function (add\w*Options)\b", text):
            end = text.find("\nexport ", m.end())
            opts = _ts_options(text[m.end(): end if end > 0 else len(text)])
            if opts:
                helpers[m.group(1)] = opts
    return helpers


def lms_table(src: Path) -> dict:
    files = sorted((src / "src").rglob("*.ts"))
    helpers = _ts_helpers(files)
    commands: dict[str, dict] = {}
    for f in sorted((src / "src" / "subcommands").rglob("*.ts")):
        text = f.read_text(encoding="utf-8")
        starts = [m for m in re.finditer(r"(?:const|let)\s+(\w+)\s*=\s*new Command\b", text)]
        chunks = {}
        for i, m in enumerate(starts):
            end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
            chunks[m.group(1)] = text[m.start():end]
        parents = {}
        for var, chunk in chunks.items():
            for child in re.findall(r"\.addCommand\(\s*(\w+)", chunk):
                parents[child] = var
        for var, chunk in chunks.items():
            name = re.search(r"\.name\(\s*" + _STR, chunk)
            if not name:
                continue
            opts = _ts_options(chunk)
            for helper, hopts in helpers.items():
                if re.search(rf"\b{helper}\(\s*{var}\b", text):
                    opts += hopts
            args = re.findall(r"\.argument\(\s*" + _STR, chunk)
            full, p = name.group(1), parents.get(var)
            while p:
                pname = re.search(r"\.name\(\s*" + _STR, chunks[p])
                full = f"{pname.group(1)} {full}" if pname else full
                p = parents.get(p)
            if full in commands:  # a subcommand whose parent lives in another file (daemon status vs status)
                full = f"{full} [{f.relative_to(src)}]"
            commands[full] = _command(opts + [(["-h", "--help"], False)], args, f.relative_to(src))
    if not commands:
        raise SystemExit(f"no commander commands found under {src}/src/subcommands")
    return {"syntax": "commander", "commands": commands}


def _command(opts: list[tuple[list[str], bool]], args: list[str], path) -> dict:
    table = {}
    for names, value in opts:
        for n in names:
            table[n] = {"value": value, "same_as": names[-1]}
    return {"file": str(path), "options": dict(sorted(table.items())), "arguments": args}


# ---------------------------------------------------------------- ollama (cobra, envconfig, api.Options)


def ollama_table(src: Path) -> dict:
    text = (src / "cmd" / "cmd.go").read_text(encoding="utf-8")
    uses = {m.group(1): m.group(2) for m in re.finditer(r"(\w+)\s*:?=\s*&cobra\.Command\{\s*Use:\s*" + _STR, text)}
    commands = {}
    for var, use in uses.items():
        opts: list[tuple[list[str], bool]] = []
        for m in re.finditer(rf"\b{var}\.(?:Persistent)?Flags\(\)\.(\w+)\(([^)]*)\)", text):
            kind, fargs = m.group(1), re.findall(_STR, m.group(2))
            if not fargs or kind.startswith("Get") or kind in ("Lookup", "Changed"):
                continue
            short = kind.endswith("P") and len(fargs) > 1 and len(fargs[1]) == 1
            names = ["--" + fargs[0]] + (["-" + fargs[1]] if short else [])
            opts.append((names, not kind.startswith("Bool")))
        name = use.split()[0]
        if name != "ollama":
            commands[name] = _command(opts + [(["-h", "--help"], False)], use.split()[1:], "cmd/cmd.go")
    if not commands:
        raise SystemExit(f"no cobra commands found in {src}/cmd/cmd.go")
    env_text = (src / "envconfig" / "config.go").read_text(encoding="utf-8")
    env = sorted(set(re.findall(r'"(OLLAMA_[A-Z0-9_]+)"', env_text)))
    types = (src / "api" / "types.go").read_text(encoding="utf-8")
    params = []
    for struct in ("Options", "Runner"):
        m = re.search(rf"type {struct} struct \{{(.*?)\n\}}", types, re.S)
        if not m:
            raise SystemExit(f"api/types.go has no {struct} struct")
        params += re.findall(r'json:"(\w+)', m.group(1))
    return {"syntax": "cobra", "commands": commands, "env": env, "modelfile_parameters": sorted(set(params)),
            "modelfile_parameters_from": "api/types.go Options, Runner"}


# ---------------------------------------------------------------- LiteRT-LM (absl flags)


def litert_table(src: Path) -> dict:
    rel = Path("runtime/engine/litert_lm_main.cc")
    text = (src / rel).read_text(encoding="utf-8")
    flags = {m.group(2): {"type": re.sub(r"\s+", "", m.group(1))}
             for m in re.finditer(r"ABSL_FLAG\(\s*([\w:<>\s]+?),\s*(\w+)\s*,", text)}
    if not flags:
        raise SystemExit(f"no ABSL_FLAG in {src / rel}")
    return {"syntax": "absl", "commands": {"litert_lm_main": {"file": str(rel), "flags": dict(sorted(flags.items()))}}}


BUILDERS = {"lms": lms_table, "ollama": ollama_table, "litert": litert_table}


# ---------------------------------------------------------------- checking an argv


def load_table(engine: str, table_dir: Path = TABLE_DIR) -> dict:
    return json.loads((table_dir / f"{engine}.json").read_text(encoding="utf-8"))


def check_argv(table: dict, argv: list[str]) -> list[str]:
    """Problems with ``argv`` (program name first) against a generated table; [] when the parser accepts it."""
    argv = [str(a) for a in argv]
    if table["syntax"] == "absl":
        cmd = table["commands"].get(Path(argv[0]).name)
        if cmd is None:
            return [f"{argv[0]}: not in the table"]
        out = []
        for a in argv[1:]:
            if not a.startswith("--"):
                out.append(f"{a!r}: absl programs take --name=value flags here")
                continue
            name = a[2:].split("=", 1)[0]
            flag = cmd["flags"].get(name) or (cmd["flags"].get(name[2:]) if name.startswith("no") else None)
            if flag is None:
                out.append(f"--{name}: unknown flag of {argv[0]}")
            elif flag["type"] != "bool" and "=" not in a:
                out.append(f"--{name} needs =value")
        return out
    words = argv[1:]
    commands = table["commands"]
    name = next((n for n in sorted(commands, key=lambda n: -len(n.split())) if words[:len(n.split())] == n.split()), None)
    if name is None:
        return [f"{' '.join(argv[:3])}: no such command"]
    cmd, rest, out, positional = commands[name], words[len(name.split()):], [], []
    i = 0
    while i < len(rest):
        a = rest[i]
        if a == "--":
            positional += rest[i + 1:]
            break
        if a.startswith("-") and len(a) > 1:
            flag, _, inline = a.partition("=")
            opt = cmd["options"].get(flag)
            if opt is None:
                out.append(f"{name}: unknown option {flag}")
            elif opt["value"] and not inline:
                if i + 1 >= len(rest):
                    out.append(f"{name}: {flag} needs a value")
                i += 1
            elif not opt["value"] and inline:
                out.append(f"{name}: {flag} takes no value")
        else:
            positional.append(a)
        i += 1
    required = [a for a in cmd.get("arguments", []) if a.startswith("<") or (not a.startswith("[") and a.isupper())]
    if len(positional) < len(required):
        out.append(f"{name}: missing {' '.join(required[len(positional):])}")
    if not any("..." in a or a.startswith("[") for a in cmd.get("arguments", [])) and len(positional) > len(cmd.get("arguments", [])):
        out.append(f"{name}: unexpected argument(s) {positional[len(cmd.get('arguments', [])):]}")
    return out


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("engine", choices=sorted(BUILDERS))
    ap.add_argument("src", type=Path, help="a checkout of the engine's source at the version named")
    ap.add_argument("--version", required=True, help="the version (tag, commit) of that checkout")
    ap.add_argument("--out", type=Path, help="default: bench/data/engine_flags/ENGINE.json")
    a = ap.parse_args(argv)
    table = {"engine": a.engine, "source": SOURCES[a.engine], "version": a.version,
             "generated_by": f"bench/engine_flags.py {a.engine} SRC --version {a.version!r}"}
    table.update(BUILDERS[a.engine](a.src))
    out = a.out or TABLE_DIR / f"{a.engine}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
    print(f"{out}: {len(table['commands'])} commands", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
