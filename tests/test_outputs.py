"""Outputs are all or nothing (planner/outputs.py): no write goes through a symlink, two runs into one place
cannot both succeed, an interrupted or failed run leaves the previous state, leftovers of killed runs go away."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.cli import main
from planner.outputs import OutputBusyError, OutputExistsError, Staged, clean_leftovers, write_file
from quantize.files import write_json

M = ["--model", "27b", "--target", "rtx4090"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


# ---------------------------------------------------------------- symlinks


def test_write_file_never_follows_a_link_at_the_final_name(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    d = tmp_path / "out"
    d.mkdir()
    (d / "recipe.json").symlink_to(outside)
    with pytest.raises(OutputExistsError):
        write_file(d / "recipe.json", "new")
    assert outside.read_text() == "keep"
    write_file(d / "recipe.json", "new", overwrite=True)  # --force replaces the link itself
    assert outside.read_text() == "keep" and not (d / "recipe.json").is_symlink()
    assert (d / "recipe.json").read_text() == "new"


def test_old_fixed_temp_names_are_not_used(tmp_path):
    """A link planted at every name the writers used to use (.recipe.json.tmp, .NAME.PID.partial) is left alone."""
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    d = tmp_path / "out"
    d.mkdir()
    for name in (".recipe.json.tmp", ".manifest.json.tmp", f".model.gguf.{os.getpid()}.partial", f".recipe.json.{os.getpid()}.tmp"):
        (d / name).symlink_to(outside)
    write_json(d / "recipe.json", {"a": 1})
    write_json(d / "manifest.json", {"b": 2})
    assert outside.read_text() == "keep"
    assert json.loads((d / "recipe.json").read_text()) == {"a": 1}


def test_emit_refuses_a_linked_directory_and_linked_files(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    r = run("recommend", *M, "--emit", link)
    assert r.exit_code == 1 and f"Error: {link} is a symbolic link; gemma-plan does not write through links" in r.output
    assert listing(real) == []
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.sh"
    victim.write_text("echo keep\n")
    (out / "run-llama-server.sh").symlink_to(victim)
    r = run("recommend", *M, "--emit", out)
    assert r.exit_code == 1 and "already has run-llama-server.sh" in r.output
    r = run("recommend", *M, "--emit", out, "--force")
    assert r.exit_code == 0, r.output
    assert victim.read_text() == "echo keep\n" and not (out / "run-llama-server.sh").is_symlink()


def test_a_link_at_the_lock_name_is_not_written_through(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    (tmp_path / ".out.gemma-plan.lock").symlink_to(outside)
    with pytest.raises(OutputBusyError):
        with Staged(tmp_path / "out"):
            pass
    assert outside.read_text() == "keep" and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- concurrency


def test_a_second_run_cannot_take_the_same_place(tmp_path):
    with Staged(tmp_path / "out") as st:
        with pytest.raises(OutputBusyError, match="another gemma-plan run"):
            with Staged(tmp_path / "out"):
                pass
        st.write("a", "1")
        st.commit(["a"])
    assert listing(tmp_path / "out") == ["a"]
    assert listing(tmp_path) == ["out"]  # lock and private directory are gone


def test_concurrent_emits_exactly_one_succeeds(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "planner.cli", "recommend", *M, "--emit", str(out), "--json"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    ok = [r for r in results if r[0] == 0]
    assert len(ok) == 1, results
    for rc, err in results:
        if rc:
            assert ("already has" in err or "another gemma-plan run" in err or "appeared while" in err), err
    doc = json.loads((out / "recipe.json").read_text())
    assert doc["plan"]["model"] == "gemma-3-27b" and len(listing(out)) == 9
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


# ---------------------------------------------------------------- interruption and failure


def test_injected_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    import planner.outputs as outputs

    calls = {"n": 0}
    real = outputs.Staged.write

    def failing(self, name, data, **kw):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError(28, "No space left on device")
        return real(self, name, data, **kw)

    monkeypatch.setattr(outputs.Staged, "write", failing)
    out = tmp_path / "out"
    r = run("recommend", *M, "--emit", out)
    assert r.exit_code == 1
    assert listing(tmp_path) == []  # no directory, no partial files, no lock


def test_failure_while_moving_restores_the_previous_files(tmp_path, monkeypatch):
    import planner.outputs as outputs

    out = tmp_path / "out"
    assert run("recommend", *M, "--emit", out).exit_code == 0
    before = {n: (out / n).read_bytes() for n in listing(out)}
    calls = {"n": 0}
    real = outputs.place

    def failing(src, dst, *, overwrite):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(5, "Input/output error")
        return real(src, dst, overwrite=overwrite)

    monkeypatch.setattr(outputs, "place", failing)
    r = run("recommend", "--model", "4b", "--target", "rtx4090", "--emit", out, "--force")
    assert r.exit_code == 1
    assert {n: (out / n).read_bytes() for n in listing(out)} == before  # the previous state, byte for byte
    assert listing(tmp_path) == ["out"]


SLOW_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from planner.outputs import Staged
    with Staged(Path(sys.argv[1]), force=True) as st:
        st.write("recipe.json", "new")
        print("building", flush=True)
        time.sleep(60)
        st.commit(["recipe.json"])
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("existing", [False, True])
def test_interrupt_while_building_leaves_the_previous_state(tmp_path, sig, existing):
    out = tmp_path / "out"
    if existing:
        out.mkdir()
        (out / "recipe.json").write_text("old")
    p = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "building"
    p.send_signal(sig)
    rc = p.wait(timeout=30)
    p.stdout.close()
    p.stderr.close()
    assert rc != 0
    assert listing(tmp_path) == (["out"] if existing else [])
    if existing:
        assert listing(out) == ["recipe.json"] and (out / "recipe.json").read_text() == "old"


def test_leftovers_of_a_killed_run_are_removed(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(tmp_path / "out")], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "building"
    p.kill()  # SIGKILL: no clean-up can run
    p.wait(timeout=30)
    p.stdout.close()
    left = listing(tmp_path)
    assert any(n.endswith(".partial") for n in left) and ".out.gemma-plan.lock" in left
    r = run("recommend", *M, "--emit", tmp_path / "out")  # the next run is not refused and cleans up
    assert r.exit_code == 0, r.output
    assert listing(tmp_path) == ["out"]
    assert clean_leftovers(tmp_path) == []


def test_staged_leaves_no_empty_directory_on_failure(tmp_path):
    out = tmp_path / "a" / "out"
    with pytest.raises(RuntimeError):
        with Staged(out) as st:
            st.write("x", "1")
            raise RuntimeError("the engine could not load the result")
    assert not out.exists()
    assert listing(tmp_path / "a") == []


def test_saved_target_and_plot_never_write_through_links(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    from profiles.errors import TargetExistsError
    from profiles.targets import load_target, save_target, user_targets_dir

    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    d = user_targets_dir()
    d.mkdir(parents=True)
    (d / "box.toml").symlink_to(outside)
    hw = load_target("rtx4090")
    with pytest.raises(TargetExistsError):
        save_target(hw, "box")
    save_target(hw, "box", force=True)
    assert outside.read_text() == "keep" and not (d / "box.toml").is_symlink()
    assert load_target("box").devices[0].memory_bytes == hw.devices[0].memory_bytes

    pytest.importorskip("matplotlib")
    (tmp_path / "plan.png").symlink_to(outside)
    r = run("recommend", *M, "--plot", tmp_path / "plan.png")
    assert r.exit_code == 0, r.output
    assert outside.read_text() == "keep" and (tmp_path / "plan.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("fresh", [True, False])
def test_files_built_under_private_temp_names_get_the_umask_mode(tmp_path, fresh):
    """quantize writes its GGUF through mkstemp (0600); once in place it is as readable as the files beside it."""
    from planner.outputs import temp_name

    dest = tmp_path / "out"
    if not fresh:
        dest.mkdir()
    old = os.umask(0o022)
    try:
        with Staged(dest, force=True) as st:
            built = temp_name(st.work, "model.gguf")
            built.write_bytes(b"GGUF")
            os.rename(built, st.path("model.gguf"))
            st.write("run.sh", "#!/bin/sh\n", executable=True)
            st.commit(["model.gguf", "run.sh"])
    finally:
        os.umask(old)
    assert stat.S_IMODE((dest / "model.gguf").stat().st_mode) == 0o644
    assert stat.S_IMODE((dest / "run.sh").stat().st_mode) == 0o755
