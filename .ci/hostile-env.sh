#!/usr/bin/env bash
# The fast tests in a hostile user environment, to show the suite is hermetic (tests/conftest.py's root sibling,
# conftest.py, gives every test its own HOME, config, caches and hub dir, and blocks the network):
#   - the user's config dir holds a target named rtx4090 that shadows the packaged one (a 4 GiB toy GPU);
#   - HOME, the real home (/root or $HOME) and the repository are mounted read-only;
#   - there is no network: a fresh network namespace with only loopback up;
#   - TMPDIR is a private directory, the only writable place the tests are given.
# Afterwards it checks that HOME, the user config and the repository are byte-for-byte as before.
#   .ci/hostile-env.sh                 # fast tests (-m "not slow")
#   .ci/hostile-env.sh tests/test_x.py # any pytest arguments instead
# Needs unshare(1) with user namespaces (Linux). llama.cpp's programs are a build cache outside the temp dirs:
# their real location is resolved first and passed on as GEMMA_PLAN_LLAMA_BINS.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD
PY=${PYTHON:-python}
ARGS=("$@")
[ ${#ARGS[@]} -gt 0 ] || ARGS=(-m "not slow")

BINS=$("$PY" -c 'from quantize.llama_bins import cache_root; print(cache_root())')
REAL_HOME=$(cd ~ && pwd -P)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gemma-plan-hostile.XXXXXX")
# the tests run from a copy of the working tree (tracked and new files), so the check below sees their writes
# only, not edits made to the checkout meanwhile
REPO=$WORK/repo
mkdir -p "$REPO"
git ls-files -z --cached --others --exclude-standard | tar -C "$SRC" --null -T - -cf - | tar -C "$REPO" -xf -
FAKE_HOME=$WORK/home
mkdir -p "$FAKE_HOME/.config/gemma-plan/targets" "$FAKE_HOME/.cache" "$WORK/tmp"
# a user target with a packaged name: a test that read the user's config would plan for 4 GiB, not 24
sed -e 's/^memory_gib = 24$/memory_gib = 4/' -e 's/^name = "GeForce RTX 4090"$/name = "Toy GPU"/' \
    "$REPO/profiles/targets/rtx4090.toml" > "$FAKE_HOME/.config/gemma-plan/targets/rtx4090.toml"
grep -q '^memory_gib = 4$' "$FAKE_HOME/.config/gemma-plan/targets/rtx4090.toml"

snapshot() {  # every file under the given dirs with its size and mtime (ignoring bytecode caches)
    find "$@" -path '*/__pycache__' -prune -o -printf '%p %s %T@\n' 2>/dev/null | sort
}
snapshot "$FAKE_HOME" > "$WORK/home.before"
snapshot "$REPO" > "$WORK/repo.before"
[ -d "$REAL_HOME/.config/gemma-plan" ] && snapshot "$REAL_HOME/.config/gemma-plan" > "$WORK/userconf.before" || : > "$WORK/userconf.before"

echo "hostile env: HOME=$FAKE_HOME (read-only, user target rtx4090 = 4 GiB), $REAL_HOME and a copy of the tree read-only, no network"
set +e
env -u XDG_CONFIG_HOME -u XDG_CACHE_HOME -u XDG_DATA_HOME -u HF_HOME -u HF_HUB_CACHE -u HF_HUB_OFFLINE \
    -u MPLCONFIGDIR -u TORCH_EXTENSIONS_DIR -u GPTQMODEL_TORCH_EXTENSIONS_DIR \
    HOME="$FAKE_HOME" TMPDIR="$WORK/tmp" GEMMA_PLAN_LLAMA_BINS="$BINS" PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$REPO" \
    unshare --user --map-root-user --net --mount bash -c '
        set -e
        ip link set lo up
        for d in "$0" "$1" "$2"; do mount --bind "$d" "$d" && mount -o remount,bind,ro "$d"; done
        if touch "$0/.probe" 2>/dev/null || touch "$1/.probe" 2>/dev/null; then echo "could not make HOME read-only" >&2; exit 90; fi
        if python -c "import socket; socket.create_connection((\"1.1.1.1\", 443), timeout=3)" 2>/dev/null; then
            echo "the network is reachable" >&2; exit 91; fi
        cd "$2"
        shift 2
        exec "$@"
    ' "$FAKE_HOME" "$REAL_HOME" "$REPO" "$PY" -m pytest -q -p no:cacheprovider --rootdir "$REPO" "${ARGS[@]}"
rc=$?
set -e

snapshot "$FAKE_HOME" > "$WORK/home.after"
snapshot "$REPO" > "$WORK/repo.after"
[ -d "$REAL_HOME/.config/gemma-plan" ] && snapshot "$REAL_HOME/.config/gemma-plan" > "$WORK/userconf.after" || : > "$WORK/userconf.after"
leaks=0
for what in home repo userconf; do
    if ! diff -q "$WORK/$what.before" "$WORK/$what.after" >/dev/null; then
        echo "WROTE OUTSIDE ITS TEMP DIRS ($what):"; diff "$WORK/$what.before" "$WORK/$what.after" | head -20; leaks=1
    fi
done
left=$(find "$WORK/tmp" -mindepth 1 -maxdepth 1 -name 'gemma-plan-tests-*' | wc -l)
echo "pytest exit code: $rc; files changed in HOME, the user config or the repository: $leaks; session dirs left: $left"
rm -rf "$WORK"
[ "$rc" -eq 0 ] && [ "$leaks" -eq 0 ] && [ "$left" -eq 0 ]
