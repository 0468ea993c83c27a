#!/bin/sh
# Builds the image the podman end-to-end tests run, without any registry: a rootfs holding only a
# static busybox (Debian's `busybox-static`) and its applet links, imported with `podman import`.
#
# Usage: scripts/podman-test-image.sh STORE_DIR [IMAGE]
#
# STORE_DIR holds podman's storage (root/, runroot/, tmp/), kept apart from the machine's own
# (/var/lib/containers) and reused between runs; IMAGE defaults to localhost/rthooks-test:latest.
# Idempotent: does nothing when the image already exists. The podman options below must match
# those of tests/support/podman.rs (`Podman::probe`), the one podman store of the tests.
#
# The static busybox comes from /bin/busybox when that binary is static (package busybox-static
# installed), else from `apt-get download busybox-static` (cached in STORE_DIR/deb).
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

is_static() {
    [ -x "$1" ] && ! ldd "$1" >/dev/null 2>&1
}

busybox=
if is_static /bin/busybox; then
    busybox=/bin/busybox
else
    mkdir -p "$store/deb"
    if ! ls "$store"/deb/busybox-static_*.deb >/dev/null 2>&1; then
        (cd "$store/deb" && apt-get download busybox-static) >&2 || {
            echo "error: no static busybox: install the busybox-static package" >&2
            exit 1
        }
    fi
    rm -rf "$store/deb/x"
    dpkg -x "$(ls "$store"/deb/busybox-static_*.deb | head -n 1)" "$store/deb/x"
    busybox=$store/deb/x/bin/busybox
fi

rootfs=$(mktemp -d "$store/rootfs.XXXXXX")
trap 'rm -rf "$rootfs"' EXIT
mkdir -p "$rootfs/bin" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" "$rootfs/tmp" "$rootfs/etc"
cp "$busybox" "$rootfs/bin/busybox"
for applet in $("$rootfs/bin/busybox" --list); do
    [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
done
echo 'root:x:0:0:root:/:/bin/sh' >"$rootfs/etc/passwd"
echo 'root:x:0:' >"$rootfs/etc/group"
tar -C "$rootfs" -c . | podman_ import --change 'CMD ["/bin/sh"]' - "$image" >/dev/null
echo "built $image in $store" >&2
