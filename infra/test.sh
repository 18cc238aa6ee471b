#!/usr/bin/env bash
# Runs Prism's whole test suite: unit, property, end-to-end and crash tests, and the tests that
# need real servers. It starts PostgreSQL 15 and a Kafka-protocol broker (Tansu) on 127.0.0.1
# with free ports (infra/test-env.sh: installs what is missing), runs everything, and stops the
# servers again. A missing server is a failure, never a skip.
# Usage: ./infra/test.sh [extra cargo-nextest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest" >&2
  cargo install cargo-nextest --locked
fi

env_file=$(mktemp)
./infra/test-env.sh start $$ > "$env_file"   # $$: the servers stop even if this script is killed
# shellcheck disable=SC1090
source "$env_file"
rm -f "$env_file"
trap './infra/test-env.sh stop "$PRISM_TEST_ENV_DIR"' EXIT
# A signal (Ctrl-C, a CI timeout) exits through the EXIT trap too, so no server is left running.
trap 'exit 130' INT TERM
echo "test servers: PostgreSQL at ${PRISM_DATABASE_URL}, Kafka protocol at ${PRISM_KAFKA_BROKERS}" >&2

cargo nextest run --workspace --no-fail-fast "$@"
