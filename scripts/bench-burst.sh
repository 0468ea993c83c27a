#!/usr/bin/env bash
# A burst of container starts on the shipped (`dist`) hook: 200 `tetragon-oci-hook createRuntime`
# started at once against the stand-in agent answering in 1 ms, then with the agent down (fail
# policy refusing, then allowing), then crossing the log's rotation size; every hook must end with
# the right exit code and the shared log must hold every line, whole. See benches/burst.rs.
# Prints latency p50/p99/max, CPU per hook and `target:` lines; exits 1 when a check fails.
set -euo pipefail
cd "$(dirname "$0")/.."

triple=$(sed -n 's/^target = "\(.*\)"/\1/p' .cargo/config.toml)
cargo build --profile dist --quiet -p tetragon-oci-hook
exec cargo bench --quiet --bench burst -- --hook "target/${triple}/dist/tetragon-oci-hook"
