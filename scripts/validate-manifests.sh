#!/usr/bin/env bash
# Validates Kubernetes manifests offline against the API schema of pinned Kubernetes versions,
# strictly (an unknown or misspelt field fails), with PyPI's `kubernetes-validate` (the schemas
# ship inside the package: no cluster, no network once installed) in a venv of its own.
#
# Usage: scripts/validate-manifests.sh [FILE.yaml...]     (default: deploy/*.yaml)
#
# Exit: 0 valid; 1 a manifest is invalid; 3 the validator cannot be installed here (no
# python3 venv module, or pip cannot reach PyPI): tests/deploy_pod.rs skips on 3 (fails under
# E2E_REQUIRED=1). The venv is kept in target/manifest-venv and reused.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# The validator's release (its schemas go up to Kubernetes 1.37) and the Kubernetes versions
# checked: 1.30 (the oldest release still supported by the major distributions here) and 1.33
# (the chart's `hostUsers: true` branch).
validator=kubernetes-validate==1.37.0
versions=(1.30.0 1.33.0)

venv=$root/target/manifest-venv
if [ ! -x "$venv/bin/kubernetes-validate" ] || ! "$venv/bin/pip" show -q kubernetes-validate >/dev/null 2>&1 \
   || [ "$(cat "$venv/.pinned" 2>/dev/null)" != "$validator" ]; then
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >&2; then
    echo "cannot create a python3 venv (apt-get install python3-venv)" >&2
    exit 3
  fi
  if ! "$venv/bin/pip" install -q --disable-pip-version-check "$validator" >&2; then
    echo "cannot install $validator from PyPI" >&2
    rm -rf "$venv"
    exit 3
  fi
  echo "$validator" > "$venv/.pinned"
fi

if [ $# -eq 0 ]; then
  set -- "$root"/deploy/*.yaml
fi
status=0
for v in "${versions[@]}"; do
  "$venv/bin/kubernetes-validate" --strict -k "$v" "$@" || status=1
done
exit $status
