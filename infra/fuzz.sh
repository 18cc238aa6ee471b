#!/usr/bin/env bash
# Fuzzes Prism's parsers of outside input (fuzz/: the access-log line parser and the pgoutput
# decoder, both in the dependency-light prism-formats crate) with cargo-fuzz (libFuzzer), for a
# bounded time per target. A crash or panic fails the run; its input is left in fuzz/artifacts/.
# Installs what is missing: the nightly toolchain (cargo-fuzz needs it) and cargo-fuzz.
# Usage: ./infra/fuzz.sh [seconds per target, default 60]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "installing the nightly toolchain (minimal profile)" >&2
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

cd fuzz
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for target in access_log_line pgoutput_message; do
  echo "fuzzing $target for ${seconds}s" >&2
  # libFuzzer writes new inputs into its first corpus folder: a scratch one; the committed corpus
  # (the second) only seeds the run.
  mkdir -p "$work/$target"
  cargo +nightly fuzz run "$target" "$work/$target" "corpus/$target" -- -max_total_time="$seconds" -max_len=4096
done
