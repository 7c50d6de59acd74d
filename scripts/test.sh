#!/usr/bin/env bash
# The single command that installs the interoperability peers and runs every test.
#
#   bash scripts/test.sh [extra cargo test args, e.g. a test-name filter]
#
# - Python peer: a venv at .venv with tests/peers/requirements.txt installed
# - Node peers:  npm install in tests/peers (no lock file is written)
# - Chromium:    Debian's chromium (apt-get, as root) for the dashboard browser test
# - then: cargo test --workspace --all-targets, with PEER_PYTHON and PEERS_DIR
#   exported for crates/billing-cli/tests/interop.rs
# - then (without extra args): every fuzz target for FUZZ_SECONDS (default 15) each
#
# Idempotent: the pip / npm steps are skipped when the pinned requirement files
# are unchanged since the last successful install (hash stamps).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS_DIR="$ROOT/tests/peers"
VENV="$ROOT/.venv"
cd "$ROOT"

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "scripts/test.sh: '$1' not found on PATH ($2)" >&2; exit 1; }
}
need python3 "needed for the Python interop peer"
need node "needed for the Node interop peers"
need npm "needed to install the Node interop peers"
need cargo "needed to build and run the tests"

hash_of() { sha256sum "$@" | sha256sum | cut -d' ' -f1; }

# --- Python peer -------------------------------------------------------------
if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
  echo "==> creating Python venv at $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
fi
py_stamp="$VENV/.peers-requirements.sha256"
py_want="$(hash_of "$PEERS_DIR/requirements.txt")"
if [[ "$(cat "$py_stamp" 2>/dev/null || true)" != "$py_want" ]] \
  || ! "$VENV/bin/python" -c 'import fluent.sender' >/dev/null 2>&1; then
  echo "==> installing Python peer requirements"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$PEERS_DIR/requirements.txt"
  echo "$py_want" >"$py_stamp"
fi

# --- Node peers --------------------------------------------------------------
node_stamp="$PEERS_DIR/node_modules/.peers-package.sha256"
node_want="$(hash_of "$PEERS_DIR/package.json")"
if [[ "$(cat "$node_stamp" 2>/dev/null || true)" != "$node_want" ]] \
  || [[ ! -f "$PEERS_DIR/node_modules/@fluent-org/logger/package.json" ]]; then
  echo "==> installing Node peer packages"
  (cd "$PEERS_DIR" && npm install --no-package-lock --no-audit --no-fund --loglevel=error)
  echo "$node_want" >"$node_stamp"
fi

# --- Browser for the dashboard test (crates/billing-cli/tests/dashboard.rs) -----
if ! command -v chromium >/dev/null 2>&1; then
  echo "==> installing chromium (Debian package) for the dashboard test"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi

# --- Structure ---------------------------------------------------------------
python3 scripts/module-cycles.py

# --- Tests -------------------------------------------------------------------
export PEER_PYTHON="$VENV/bin/python"
export PEERS_DIR
echo "==> cargo test --workspace --all-targets $*"
cargo test --workspace --all-targets "$@"

# --- Fuzzing: a short run of every decoder's target (FUZZ_SECONDS=0 skips it) ------
if [[ $# -eq 0 && "${FUZZ_SECONDS:-15}" != 0 ]]; then
  bash scripts/fuzz.sh "${FUZZ_SECONDS:-15}"
fi
