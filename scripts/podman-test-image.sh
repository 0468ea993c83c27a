#!/bin/sh
# Builds the image the podman end-to-end tests run, without any registry: the OCI archive of
# scripts/oci-test-image.sh (a static busybox and its applet links), loaded with `podman load`.
#
# Usage: scripts/podman-test-image.sh STORE_DIR [IMAGE]
#
# STORE_DIR holds podman's storage (root/, runroot/, tmp/), kept apart from the machine's own
# (/var/lib/containers) and reused between runs; IMAGE defaults to localhost/rthooks-test:latest.
# Idempotent: does nothing when the image already exists. The podman options below must match
# those of tests/support/podman.rs (`Podman::probe`), the one podman store of the tests.
set -eu

store=${1:?usage: $0 STORE_DIR [IMAGE]}
image=${2:-localhost/rthooks-test:latest}
mkdir -p "$store"
store=$(cd "$store" && pwd)

podman_() {
    podman --root "$store/root" --runroot "$store/runroot" --tmpdir "$store/tmp" \
        --storage-driver vfs --cgroup-manager cgroupfs --events-backend file "$@"
}

if podman_ image exists "$image"; then
    exit 0
fi

# The one test image (scripts/oci-test-image.sh: static busybox, all applet links, /bin/sh as
# default command), loaded from its OCI archive.
archive=$(mktemp "$store/image.XXXXXX.tar")
trap 'rm -f "$archive"' EXIT
bash "$(dirname "$0")/oci-test-image.sh" "$archive" "$image"
podman_ load -q -i "$archive" >/dev/null
echo "built $image in $store" >&2
