#!/usr/bin/env bash
# SIGTERM `gemma-plan quantize` at moments after it starts building, into a new and into an existing --out,
# and print what is left: nothing / the previous files, or the complete new files, never a mix.
# usage: bench/interrupt_quantize.sh HF_DIR  (a tiny one: python -c "from quantize.tiny import build_tiny_model; build_tiny_model('t', 'gemma3_text')")
set -u
model=${1:?HF directory}
work=$(mktemp -d)
q() { exec python -m planner.cli quantize --model "$model" --target cpu-16gb --quant Q8_0 --out "$work/out" --no-validate "$@" >/dev/null 2>&1; }
# `( q ... ) &`: exec makes the background job python itself, so the signal reaches it
wait_partial() { for _ in $(seq 1 500); do ls -A "$1" 2>/dev/null | grep -q partial && return; sleep 0.01; done; }
echo "new --out:"
for extra in 0 0.05 0.1 0.2 0.3 0.4; do
  rm -rf "$work/out"
  ( q --ctx 2048 ) & pid=$!
  wait_partial "$work"; sleep "$extra"; kill -TERM $pid 2>/dev/null; wait $pid; rc=$?
  echo "  +${extra}s rc=$rc: $(ls -A "$work" | tr '\n' ' ')/ $(ls -A "$work/out" 2>/dev/null | tr '\n' ' ')"
done
echo "existing --out, --force:"
rm -rf "$work/out"; ( q --ctx 2048 )
before=$(cd "$work/out" && sha256sum -- * | sha256sum)
for extra in 0 0.05 0.1 0.2 0.3 0.5; do
  ( q --ctx 4096 --force ) & pid=$!
  wait_partial "$work/out"; sleep "$extra"; kill -TERM $pid 2>/dev/null; wait $pid; rc=$?
  now=$(cd "$work/out" && sha256sum -- * | sha256sum)
  ctx=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['plan']['ctx'])" "$work/out/recipe.json")
  echo "  +${extra}s rc=$rc: $(ls -A "$work/out" | tr '\n' ' ')$([ "$now" = "$before" ] && echo previous || echo new), recipe ctx $ctx"
  before=$now
done
rm -rf "$work"
