#!/usr/bin/env bash
# Runs Prism's whole test suite: unit, property, end-to-end and crash tests.
# Usage: ./infra/test.sh [extra cargo-nextest arguments]
# Needs only a Rust toolchain and a C compiler (SQLite and zstd are built from the crates);
# cargo-nextest is installed from crates.io when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest" >&2
  cargo install cargo-nextest --locked
fi

cargo nextest run --workspace --no-fail-fast "$@"
