#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for SECONDS each (default 20), starting from its committed
# seeds, on the stable toolchain: the targets are built with libFuzzer's coverage
# instrumentation the way cargo-fuzz builds them (sancov passes, --cfg fuzzing), without the
# nightly-only sanitizer flags, so no cargo-fuzz install and no nightly are needed.
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]
#
# New inputs go to fuzz/corpus/TARGET (ignored by git); a crash writes fuzz/artifacts/TARGET/
# and fails the script. CI runs it with a short time (scripts/test.sh); long runs are recorded
# with their command in RELIABILITY.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_EACH="${1:-20}"
shift || true
cd "$ROOT/fuzz"

TARGETS=("$@")
if [[ ${#TARGETS[@]} -eq 0 ]]; then
  mapfile -t TARGETS < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^forward-fuzz$')
fi

export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
export CARGO_TARGET_DIR="$ROOT/fuzz/target"
# An explicit --target keeps RUSTFLAGS off build scripts and proc macros (as cargo-fuzz does).
HOST="$(rustc -vV | sed -n 's/^host: //p')"
echo "==> building fuzz targets: ${TARGETS[*]}"
cargo build --release --locked --quiet --target "$HOST" $(printf -- '--bin %s ' "${TARGETS[@]}")
BIN="$CARGO_TARGET_DIR/$HOST/release"

for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  echo "==> fuzzing $t for ${SECONDS_EACH}s"
  "$BIN/$t" "corpus/$t" "seeds/$t" \
    -max_total_time="$SECONDS_EACH" -max_len=65536 -rss_limit_mb=2048 \
    -artifact_prefix="artifacts/$t/" -print_final_stats=1 2>&1 | grep -E "^(stat::number_of_executed_units|==|SUMMARY|Done)" || true
  # libFuzzer exits non-zero on a crash; grep above hides the status, so check artifacts.
  if compgen -G "artifacts/$t/*" >/dev/null; then
    echo "fuzz target $t found a crash: $(ls artifacts/$t)" >&2
    exit 1
  fi
done
