#!/usr/bin/env bash
# Shows the whole system working on a real containerd, step by step: containerd configured by
# our `enable-nri`, our NRI plugin (`install --interface nri-hook --daemonize`), a stand-in
# Tetragon agent, a pod and its container created through the Kubernetes CRI, runc running our
# `tetragon-oci-hook` at createRuntime; then the agent stopped, a container refused and one in an
# allowed namespace started. It runs the end-to-end test (tests/e2e_containerd.rs), which
# prints each step and tears everything down, even on failure.
#
# Usage (as root): scripts/demo-containerd.sh [1.7|2.1]
# Needs: Debian's busybox-static (or network access to the Debian mirror for `apt-get download`),
# and the containerd release, fetched here by scripts/fetch-containerd.sh into a cache.
set -euo pipefail
cd "$(dirname "$0")/.."

release=${1:-1.7}
case "$release" in
  1.7 | 2.1) ;;
  *) echo "usage: $0 [1.7|2.1]" >&2; exit 2 ;;
esac
if [ "$(id -u)" != 0 ]; then
  echo "error: run as root (containerd and runc need it)" >&2
  exit 2
fi

echo "== fetching containerd $release (cached after the first run)"
bash scripts/fetch-containerd.sh "$release"
# cargo's own progress is shown: a first build takes minutes on a small machine (dev profile,
# target/x86_64-unknown-linux-gnu/debug/), later runs seconds.
echo "== building the hook (tetragon-oci-hook; cargo's progress below, minutes the first time)"
# The hook is the workspace member `oci-hook`: `cargo test --test ...` does not build its binary.
cargo build -p tetragon-oci-hook
echo "== building the setup tool and the end-to-end test (tests/e2e_containerd.rs)"
cargo test --no-run --test e2e_containerd
echo "== running the scenario on containerd $release"
E2E_REQUIRED=1 cargo test --quiet --test e2e_containerd -- --nocapture --exact \
  "pod_gets_hook_through_nri_and_hook_gates_start_containerd_${release/./_}"
