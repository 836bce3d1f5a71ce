"""Reading published files through the real huggingface_hub client against a local hub (tests/fakehub.py):
a plan from hf.co/USER/REPO:Q4_K_M equals the plan from the same file on disk, after reading only its header."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from fakehub import FakeHub  # noqa: E402  (tests/ is on sys.path: pytest prepends it)


def write_sparse_gguf(path: Path, model: str = "gemma-3-4b") -> Path:
    """A real-width Gemma GGUF whose weights are zeros: the header is written, the data is a sparse hole. Every 2-D
    weight is Q4_K (rows are multiples of 256), norms F32; general.file_type 15 (Q4_K_M)."""
    from planner.catalog import get_model
    from planner.gguf_header import parse_header

    spec = get_model(model)[0]
    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_block_count(spec.n_layers)
    w.add_context_length(spec.ctx_train)
    w.add_embedding_length(spec.hidden)
    w.add_feed_forward_length(spec.layers[0].n_ff if hasattr(spec.layers[0], "n_ff") else 10240)
    w.add_head_count(spec.layers[0].n_head if hasattr(spec.layers[0], "n_head") else 8)
    w.add_head_count_kv(spec.layers[0].n_head_kv)
    w.add_key_length(spec.layers[0].head_dim_k)
    w.add_value_length(spec.layers[0].head_dim_v)
    w.add_sliding_window(1024)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(15)
    q4k, f32 = gguf.GGMLQuantizationType.Q4_K, gguf.GGMLQuantizationType.F32
    for t in spec.tensors:
        n = int(np.prod(t.shape))
        if len(t.shape) > 1 and t.shape[-1] % 256 == 0:
            block, size = gguf.GGML_QUANT_SIZES[q4k]
            w.add_tensor_info(t.name, t.shape, np.dtype(np.float32), n // block * size, raw_dtype=q4k)
        else:
            w.add_tensor_info(t.name, t.shape, np.dtype(np.float32), n * 4, raw_dtype=f32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    raw = path.read_bytes()
    h = parse_header(raw, 1 << 50)
    end = max(h.data_offset + t.offset + t.n_bytes for t in h.tensors)
    with open(path, "r+b") as f:
        f.truncate(end)
    return path


@pytest.fixture
def hub(tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    server = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(c, "ENDPOINT", server.url)
    monkeypatch.setattr(c, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(c, "HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    yield server
    server.close()


@pytest.fixture(scope="module")
def sparse_gguf(tmp_path_factory):
    """(path, sha256): hashed here once, not inside a request the client times out on."""
    import hashlib

    path = write_sparse_gguf(tmp_path_factory.mktemp("sparse") / "gemma-3-4b-it-Q4_K_M.gguf")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return path, h.hexdigest()


def _plan(query: str, extra=()):
    from planner import cli  # noqa: F401  (the same code path as the command)
    from click.testing import CliRunner

    r = CliRunner().invoke(cli.main, ["recommend", "--model", query, "--target", "rtx4090", "--json", *extra])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_plan_from_hub_header_equals_plan_from_the_file_on_disk(hub, sparse_gguf):
    sparse_gguf, sha = sparse_gguf
    hub.add("acme/gemma-3-4b-it-GGUF", sparse_gguf.name, sparse_gguf, sha)
    hub.add("acme/gemma-3-4b-it-GGUF", "mmproj-F16.gguf", sparse_gguf, sha)
    size = sparse_gguf.stat().st_size
    remote = _plan("hf.co/acme/gemma-3-4b-it-GGUF:Q4_K_M")
    local = _plan(str(sparse_gguf))
    served = hub.served[sparse_gguf.name]
    print(f"header-only plan read {served:,} of {size:,} bytes ({served / size:.4%})")
    assert served < size / 100, f"{served:,} bytes read of {size:,}"
    ra, la = remote["plan"].pop("artifact"), local["plan"].pop("artifact")
    for d in (remote["plan"], local["plan"]):
        d.pop("launch")
    assert json.dumps(remote["plan"], sort_keys=True) == json.dumps(local["plan"], sort_keys=True)
    assert ra["repo"] == "acme/gemma-3-4b-it-GGUF" and ra["file"] == sparse_gguf.name and ra["bytes"] == size == la["bytes"]
    assert ra["sha256"] == hub.sha256(sparse_gguf) and ra["weights_basis"] == "header"
    assert ra["fetch"] == ["hf", "download", "acme/gemma-3-4b-it-GGUF", sparse_gguf.name, "--local-dir", "."]
    # the same file named by USER/REPO:FILE.gguf, and offline from the cache (no request reaches the server)
    assert _plan(f"acme/gemma-3-4b-it-GGUF:{sparse_gguf.name}")["plan"]["memory"] == local["plan"]["memory"]
    import huggingface_hub.constants as c

    before = dict(hub.served)
    c.HF_HUB_OFFLINE = True
    try:
        off = _plan("hf.co/acme/gemma-3-4b-it-GGUF:Q4_K_M")
    finally:
        c.HF_HUB_OFFLINE = False
    assert hub.served == before
    assert off["plan"]["memory"] == local["plan"]["memory"]
    assert any("offline (HF_HUB_OFFLINE=1)" in n for n in off["notes"])
    assert not [u for u in hub.unknown if "/api/models" in u or "/resolve/" in u], hub.unknown


def test_gated_repo_gets_the_licence_and_login_hint(hub):
    hub.gated.add("google/gemma-x-GGUF")
    from click.testing import CliRunner

    from planner import cli

    r = CliRunner().invoke(cli.main, ["recommend", "--model", "hf.co/google/gemma-x-GGUF:Q4_K_M", "--target", "rtx4090"])
    assert r.exit_code != 0
    assert "gated" in r.output and "hf auth login" in r.output and "Traceback" not in r.output


def test_hostile_header_is_refused_in_one_line(hub, tmp_path):
    bad = tmp_path / "bad-Q4_K_M.gguf"
    bad.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + (1 << 40).to_bytes(8, "little") + (1).to_bytes(8, "little") + b"\0" * 64)
    hub.add("acme/bad-GGUF", bad.name, bad)
    from click.testing import CliRunner

    from planner import cli

    r = CliRunner().invoke(cli.main, ["recommend", "--model", "hf.co/acme/bad-GGUF:Q4_K_M", "--target", "rtx4090"])
    assert r.exit_code != 0 and "implausible counts" in r.output and len(r.output.strip().splitlines()) == 1


def test_tampered_offline_cache_is_refused_in_one_line(hub, small_gguf, tmp_path):
    """The cache under $HF_HOME/gemma-plan is read back bounded and checked: a blob name that leaves the cache,
    or an entry that is not JSON, is refused by name, never followed or turned into a traceback."""
    hub.add("acme/tiny-GGUF", small_gguf.name, small_gguf)
    _plan("hf.co/acme/tiny-GGUF:F32")
    (index,) = (tmp_path / "hf" / "gemma-plan" / "gguf" / "acme--tiny-GGUF").glob("*.json")
    from click.testing import CliRunner

    import huggingface_hub.constants as c

    from planner import cli

    meta = json.loads(index.read_text())
    for text, first in ((json.dumps(dict(meta, blob="../../../../etc/passwd")), "malformed cached entry"),
                        (json.dumps(dict(meta, size="1")), "malformed cached entry"),
                        ("[1, 2", "is not valid JSON")):
        index.write_text(text)
        c.HF_HUB_OFFLINE = True
        try:
            r = CliRunner().invoke(cli.main, ["recommend", "--model", "hf.co/acme/tiny-GGUF:F32", "--target", "rtx4090"])
        finally:
            c.HF_HUB_OFFLINE = False
        assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
        assert r.output.startswith(f"Error: {index}: ") and first in r.output.splitlines()[0], r.output
        assert "delete that file" in r.output


def test_safetensors_checkpoint_read_from_config_and_headers(hub, tiny_model, tmp_path):
    d = tiny_model("gemma3_text")
    for f in d.iterdir():
        if f.is_file():
            hub.add("acme/tiny-gemma", f.name, f)
    from planner.sources import load_hf_dir

    remote = _plan("acme/tiny-gemma")
    local = _plan(str(d))
    assert remote["plan"]["memory"] == local["plan"]["memory"]
    st = sum(p.stat().st_size for p in d.glob("*.safetensors"))
    assert hub.served.get("model.safetensors", 0) < max(st, 1)
    assert load_hf_dir(d).n_params_text > 0


@pytest.fixture
def small_gguf(tiny_gguf, tmp_path):
    import shutil

    p = tmp_path / "src" / "tiny-it-F32.gguf"
    p.parent.mkdir()
    shutil.copy(tiny_gguf("gemma3_text"), p)
    return p


def _fetch(*args):
    from click.testing import CliRunner

    from planner import cli

    return CliRunner().invoke(cli.main, ["fetch", *args])


def test_fetch_resumes_an_interrupted_download_and_checks_sha256(hub, small_gguf, tmp_path):
    hub.add("acme/tiny-GGUF", small_gguf.name, small_gguf)
    plan = _plan("hf.co/acme/tiny-GGUF:F32")
    pj = tmp_path / "plan.json"
    pj.write_text(json.dumps(plan))
    size = small_gguf.stat().st_size
    hub.served.clear()
    hub.fail_after[small_gguf.name] = size // 2
    out = tmp_path / "models"
    r = _fetch(str(pj), "--dir", str(out))
    assert r.exit_code != 0 and "stopped at" in r.output and "again" in r.output
    assert not (out / small_gguf.name).exists()
    part = out / f".gemma-plan-fetch-{small_gguf.name}.part"
    assert 0 < part.stat().st_size < size
    r = _fetch(str(pj), "--dir", str(out), "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert 0 < res["resumed_from"] < size
    assert res["sha256"] == hub.sha256(small_gguf) and res["bytes"] == size
    assert (out / small_gguf.name).read_bytes() == small_gguf.read_bytes() and not part.exists()
    assert hub.served[small_gguf.name] < size * 1.5  # resumed, not started over
    r = _fetch(str(pj), "--dir", str(out), "--json")
    assert json.loads(r.output)["status"] == "already here"


def test_fetch_refuses_a_wrong_checksum(hub, small_gguf, tmp_path):
    hub.add("acme/tiny-GGUF", small_gguf.name, small_gguf)
    plan = _plan("hf.co/acme/tiny-GGUF:F32")
    pj = tmp_path / "plan.json"
    pj.write_text(json.dumps(plan))
    bad = tmp_path / "tampered.gguf"  # the hub announces the real sha256 but serves other bytes of the same size
    data = bytearray(small_gguf.read_bytes())
    data[-1] ^= 0xFF
    bad.write_bytes(bytes(data))
    hub.sha_override[small_gguf.name] = hub.sha256(small_gguf)
    hub.add("acme/tiny-GGUF", small_gguf.name, bad)
    r = _fetch(str(pj), "--dir", str(tmp_path / "m"))
    assert r.exit_code != 0 and "sha256" in r.output and "removed" in r.output
    assert not list((tmp_path / "m").iterdir())


def test_fetch_prints_the_ollama_pull_and_refuses_a_hostile_plan(tmp_path):
    pj = tmp_path / "p.json"
    pj.write_text(json.dumps({"plan": {"artifact": {"kind": "ollama", "tag": "gemma3n:e2b"}}}))
    r = _fetch(str(pj))
    assert r.exit_code == 0 and r.output.strip() == "ollama pull gemma3n:e2b"
    pj.write_text(json.dumps({"plan": {"artifact": {"kind": "mlx", "repo": "mlx-community/gemma-3-text-27b-it-4bit", "file": None}}}))
    r = _fetch(str(pj))  # a whole repository: the hf download command, not a GGUF picked by quant
    assert r.exit_code == 0 and r.output.strip() == ("hf download mlx-community/gemma-3-text-27b-it-4bit "
                                                     "--local-dir ./gemma-3-text-27b-it-4bit"), r.output
    pj.write_text(json.dumps({"plan": {"artifact": {"kind": "gptq", "repo": "acme/x;rm", "file": None}}}))
    r = _fetch(str(pj))
    assert r.exit_code != 0 and "is not a Hugging Face repo" in r.output
    pj.write_text(json.dumps({"plan": {"artifact": {"kind": "gguf", "repo": "acme/x", "file": "../../etc/passwd"}}}))
    r = _fetch(str(pj))
    assert r.exit_code != 0 and "plain file name" in r.output and len(r.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_quantize_target_without_model_downloads_the_pick_and_proceeds(hub, tiny_model, tmp_path, monkeypatch, llama_cpp_module):
    """Online: quantize --target picks gemma-3-1b for a 2 GiB card, downloads google/gemma-3-1b-it (here a tiny Gemma 3
    served by the local hub) through huggingface_hub after the disk check, and writes the GGUF."""
    d = tiny_model("gemma3_text")
    for f in d.iterdir():
        if f.is_file():
            hub.add("google/gemma-3-1b-it", f.name, f)
    from click.testing import CliRunner

    from planner import cli

    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli.main, ["quantize", "--target", "rtx4090", "--vram", "2GiB", "--ram", "2GiB", "--margin", "0.5GiB",
                                      "--out", str(tmp_path / "out"), "--no-validate", "--json"])
    assert r.exit_code == 0, r.output
    assert "no --model given: producing gemma-3-1b" in r.output
    ggufs = list((tmp_path / "out").glob("gemma-3-1b-*.gguf"))
    assert len(ggufs) == 1 and ggufs[0].stat().st_size > 0
    assert hub.served.get("model.safetensors", 0) > 0


@pytest.mark.slow
def test_quantize_from_recipe_writes_the_file_the_recipe_loads(hub, tiny_model, tmp_path, monkeypatch, llama_cpp_module):
    d = tiny_model("gemma3_text")
    for f in d.iterdir():
        if f.is_file():
            hub.add("google/gemma-3-1b-it", f.name, f)
    from click.testing import CliRunner

    from planner import cli

    monkeypatch.chdir(tmp_path)
    hw = ["--target", "rtx4090", "--vram", "2GiB", "--ram", "2GiB", "--margin", "0.5GiB"]
    r = CliRunner().invoke(cli.main, ["recommend", "--model", "gemma-3-1b", *hw, "--ctx", "4096", "--emit", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "run" / "recipe.json").read_text())
    name = doc["model"]["ref"]["value"]
    assert name == doc["model"]["ref"]["artifact"]["file"]  # a published file name (unsloth's)
    r = CliRunner().invoke(cli.main, ["quantize", "--from-recipe", str(tmp_path / "run" / "recipe.json"), *hw[2:],
                                      "--out", str(tmp_path / "out"), "--no-validate"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / name).stat().st_size > 0


# ---------------------------------------------------------------- exact size of a catalogue artifact

CAT_REPO, CAT_FILE = "unsloth/gemma-4-31B-it-GGUF", "gemma-4-31B-it-Q4_K_M.gguf"  # what recommend 31b on an RTX 4090 names


@pytest.fixture
def published(hub, tmp_path):
    """The catalogue's file for 31b Q4_K_M, served by the local hub (its bytes are a stand-in: only size and sha256 matter)."""
    f = tmp_path / "served" / CAT_FILE
    f.parent.mkdir()
    f.write_bytes(bytes(range(256)) * 4099)
    hub.add(CAT_REPO, CAT_FILE, f)
    return f


def _run(*args):
    from click.testing import CliRunner

    from planner import cli

    return CliRunner().invoke(cli.main, list(args))


def _offline(on: bool):
    import huggingface_hub.constants as c

    c.HF_HUB_OFFLINE = on


def test_resolve_gives_the_exact_size_and_sha256_and_a_plain_recommend_reads_them_without_network(hub, published, tmp_path):
    size, sha = published.stat().st_size, hub.sha256(published)
    before = _plan("31b")["plan"]["artifact"]
    assert before["size_exact"] is False and before["bytes"] is None and before["size_source"] == "published text"
    assert hub.requests == []  # a plain recommend never asks the hub
    resolved = _plan("31b", ["--resolve"])
    art = resolved["plan"]["artifact"]
    assert (art["repo"], art["file"], art["bytes"], art["sha256"]) == (CAT_REPO, CAT_FILE, size, sha)
    assert art["size_exact"] is True and art["size_source"] == "hub" and art["revision"] == "0123456789abcdef0123456789abcdef01234567"
    assert "tensor mix is not" in art["weights_basis"] and art["size_checked"].endswith("Z")
    assert hub.requests == [f"HEAD /{CAT_REPO}/resolve/main/{CAT_FILE}"]  # metadata only, no byte of the file
    assert hub.served.get(CAT_FILE, 0) == 0
    hub.requests.clear()
    again = _plan("31b")
    assert hub.requests == []
    assert again["plan"]["artifact"] == art
    r = _run("recommend", "--model", "31b", "--target", "rtx4090")
    assert r.exit_code == 0, r.output
    assert f"{size:,}bytes(exact,fromthehub)" in "".join(r.output.split())  # however the terminal wraps it
    r = _run("estimate", "--model", "31b", "--quant", "Q4_K_M", "--target", "rtx4090", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["plan"]["artifact"] == art  # estimate names the same file from the same cache
    assert hub.requests == []


def test_a_plain_recommend_reads_the_cache_without_importing_huggingface_hub(hub, published, tmp_path):
    """The same lookup in a fresh interpreter: the exact bytes come from the cache, no request reaches the hub and
    huggingface_hub is never imported (recommend keeps its start-up cost)."""
    _plan("31b", ["--resolve"])
    hub.requests.clear()
    code = ("import json, sys\nfrom planner.cli import main\n"
            "try:\n    main(['recommend', '--model', '31b', '--target', 'rtx4090', '--json'])\nexcept SystemExit as e:\n    assert not e.code\n")
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=hub.url, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    probe = code + "print('HF', 'huggingface_hub' in sys.modules, file=sys.stderr)\n"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    art = json.loads(r.stdout)["plan"]["artifact"]
    assert art["bytes"] == published.stat().st_size and art["sha256"] == hub.sha256(published) and art["size_source"] == "hub"
    assert r.stderr.strip().splitlines()[-1] == "HF False"
    assert hub.requests == []


def test_resolve_offline_with_an_empty_cache_says_so_in_one_line_and_the_plan_stands(hub, published):
    _offline(True)
    try:
        out = _plan("31b", ["--resolve"])
    finally:
        _offline(False)
    assert hub.requests == []
    art = out["plan"]["artifact"]
    assert art["size_exact"] is False and art["size_published"] == "18.3 GB"
    (note,) = [n for n in out["notes"] if n.startswith("--resolve:")]
    assert "offline (HF_HUB_OFFLINE=1)" in note and "not cached" in note and "\n" not in note
    assert note.endswith("the plan still stands with the published size (18.3 GB)")
    # with the size cached, offline --resolve uses it
    _plan("31b", ["--resolve"])
    hub.requests.clear()
    _offline(True)
    try:
        art = _plan("31b", ["--resolve"])["plan"]["artifact"]
    finally:
        _offline(False)
    assert art["bytes"] == published.stat().st_size and hub.requests == []


def test_resolve_against_a_gated_repo_or_no_network_keeps_the_plan_with_one_line(hub, published, monkeypatch):
    hub.gated.add(CAT_REPO)
    out = _plan("31b", ["--resolve"])
    (note,) = [n for n in out["notes"] if n.startswith("--resolve:")]
    assert "gated" in note and "hf auth login" in note and "plan still stands" in note and "\n" not in note
    assert out["plan"]["artifact"]["size_exact"] is False
    import socket

    import huggingface_hub.constants as c

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setattr(c, "HUGGINGFACE_CO_URL_TEMPLATE", dead + "/{repo_id}/resolve/{revision}/{filename}")
    r = _run("recommend", "--model", "31b", "--target", "rtx4090", "--resolve", "--json")
    assert r.exit_code == 0, r.output
    (note,) = [n for n in json.loads(r.output)["notes"] if n.startswith("--resolve:")]
    assert "cannot read unsloth/gemma-4-31B-it-GGUF from the hub: ConnectError" in note and "\n" not in note, note
    assert note.endswith("the plan still stands with the published size (18.3 GB)")


def test_a_tampered_size_entry_is_refused_in_one_line(hub, published, tmp_path):
    _plan("31b", ["--resolve"])
    from planner.hub import file_meta_path

    entry = file_meta_path(CAT_REPO, CAT_FILE)
    assert entry.is_relative_to(tmp_path / "hf" / "gemma-plan")
    meta = json.loads(entry.read_text())
    for text in (json.dumps(dict(meta, size="1")), json.dumps(dict(meta, sha256="0" * 63)),
                 json.dumps(dict(meta, file="other.gguf")), json.dumps(dict(meta, extra=1)),
                 json.dumps(dict(meta, size=1 << 60)), "[1, 2", json.dumps(meta) + " " * 5000):
        entry.write_text(text)
        r = _run("recommend", "--model", "31b", "--target", "rtx4090")
        assert r.exit_code == 1 and r.output.startswith(f"Error: {entry}: "), r.output
        assert "delete that file" in r.output and len(r.output.strip().splitlines()) == 1, r.output
    entry.unlink()
    entry.symlink_to(published)
    r = _run("recommend", "--model", "31b", "--target", "rtx4090")
    assert r.exit_code == 1 and "symbolic link" in r.output and len(r.output.strip().splitlines()) == 1
    # --resolve asks the hub again and replaces the entry (never writing through the link)
    entry.unlink()
    entry.write_text("[1, 2")
    art = _plan("31b", ["--resolve"])["plan"]["artifact"]
    assert art["bytes"] == published.stat().st_size and json.loads(entry.read_text())["size"] == art["bytes"]


def test_fetch_and_a_header_read_fill_the_same_cache(hub, published, sparse_gguf, tmp_path, monkeypatch):
    plan = _plan("31b")
    pj = tmp_path / "plan.json"
    pj.write_text(json.dumps(plan))
    r = _run("fetch", str(pj), "--dir", str(tmp_path / "m"), "--json")
    assert r.exit_code == 0, r.output
    art = _plan("31b")["plan"]["artifact"]
    assert art["bytes"] == published.stat().st_size and art["sha256"] == hub.sha256(published) and art["size_source"] == "hub"
    # a header read of the catalogue's gemma-3-4b file: a later plain recommend of the catalog model has its bytes
    path, sha = sparse_gguf
    hub.add("ggml-org/gemma-3-4b-it-GGUF", path.name, path, sha)
    assert _plan("gemma-3-4b", ["--quant", "Q4_K_M"])["plan"]["artifact"]["size_exact"] is False
    _plan("hf.co/ggml-org/gemma-3-4b-it-GGUF:Q4_K_M")
    hub.requests.clear()
    art = _plan("gemma-3-4b", ["--quant", "Q4_K_M"])["plan"]["artifact"]
    assert (art["bytes"], art["sha256"], art["size_source"]) == (path.stat().st_size, sha, "hub") and hub.requests == []


def test_recommend_fetch_downloads_the_chosen_file_like_gemma_plan_fetch(hub, published, tmp_path, monkeypatch):
    emit = tmp_path / "run"
    r = _run("recommend", "--model", "31b", "--target", "rtx4090", "--emit", str(emit), "--fetch", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    got = out["fetched"]
    assert got["status"] == "downloaded" and got["path"] == str(emit / CAT_FILE) and got["sha256"] == hub.sha256(published)
    assert (emit / CAT_FILE).read_bytes() == published.read_bytes()
    assert f"MODEL={CAT_FILE}" in (emit / "run-llama-server.sh").read_text()  # where the script loads it from
    monkeypatch.chdir(emit)  # without --emit: into the current directory, where the file already is
    r = _run("recommend", "--model", "31b", "--target", "rtx4090", "--fetch")
    assert r.exit_code == 0, r.output
    assert f"already here: {emit / CAT_FILE} ({published.stat().st_size:,} bytes" in r.output, r.output[-3000:]
    assert f"{published.stat().st_size:,}bytes(exact,fromthehub)" in "".join(r.output.split())  # the plan, after the fetch
    # a format nobody publishes: nothing to fetch, said in one line
    r = _run("recommend", "--model", "31b", "--target", "rtx4090", "--quant", "Q3_K_S", "--fetch")
    assert r.exit_code == 1 and r.output.strip().splitlines()[-1].startswith("Error: the plan names no published Q3_K_S file")


def test_a_file_that_changed_on_the_hub_is_refused_by_fetch_and_the_next_plan_has_its_new_size(hub, published, tmp_path):
    """The cache can go stale; fetch checks the hub before the first byte, refuses the planned size that no longer
    holds, and keeps the new one, so planning again names the file as it is now."""
    old = _plan("31b", ["--resolve"])["plan"]["artifact"]
    grown = tmp_path / "served2" / CAT_FILE
    grown.parent.mkdir()
    grown.write_bytes(published.read_bytes() + b"\0" * 4096)
    hub.add(CAT_REPO, CAT_FILE, grown)
    r = _run("recommend", "--model", "31b", "--target", "rtx4090", "--fetch", "--emit", str(tmp_path / "run"))
    assert r.exit_code == 1 and "the file changed" in r.output.strip().splitlines()[-1], r.output
    assert not (tmp_path / "run" / CAT_FILE).exists()
    new = _plan("31b")["plan"]["artifact"]
    assert new["bytes"] == grown.stat().st_size == old["bytes"] + 4096 and new["sha256"] == hub.sha256(grown)
