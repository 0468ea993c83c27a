#!/usr/bin/env bash
# Builds an OCI image archive (an `oci-layout` tarball, as `ctr images import` reads) holding a
# static busybox and its applet links, without any registry or image builder.
#
# Usage: scripts/oci-test-image.sh OUT.tar IMAGE-NAME [ENTRYPOINT-ARG...]
#   e.g. scripts/oci-test-image.sh pause.tar localhost/rthooks-pause:latest /bin/sleep 2147483647
#
# The one test image: containerd imports it (`ctr images import`, tests/support/cri.rs) and
# podman loads it (`podman load`, scripts/podman-test-image.sh).
#
# The static busybox comes from /bin/busybox when that binary is static (package busybox-static
# installed), else from `apt-get download busybox-static` (cached next to OUT.tar). The archive is
# reproducible: fixed file times and owners, so the same busybox gives the same digests.
set -euo pipefail

out=${1:?usage: $0 OUT.tar IMAGE-NAME [ENTRYPOINT-ARG...]}
name=${2:?usage: $0 OUT.tar IMAGE-NAME [ENTRYPOINT-ARG...]}
shift 2
outdir=$(cd "$(dirname "$out")" && pwd)

is_static() { [ -x "$1" ] && ! ldd "$1" >/dev/null 2>&1; }

busybox=
if is_static /bin/busybox; then
  busybox=/bin/busybox
else
  deb_dir=$outdir/.busybox-deb
  mkdir -p "$deb_dir"
  if ! ls "$deb_dir"/busybox-static_*.deb >/dev/null 2>&1; then
    (cd "$deb_dir" && apt-get download busybox-static) >&2 || {
      echo "error: no static busybox: install the busybox-static package" >&2
      exit 1
    }
  fi
  rm -rf "$deb_dir/x"
  dpkg -x "$(ls "$deb_dir"/busybox-static_*.deb | head -n 1)" "$deb_dir/x"
  busybox=$deb_dir/x/bin/busybox
fi

work=$(mktemp -d "$outdir/.oci-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
mkdir -p "$rootfs/bin" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" "$rootfs/tmp" "$rootfs/etc"
cp "$busybox" "$rootfs/bin/busybox"
for applet in $("$rootfs/bin/busybox" --list); do
  [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
done
echo 'root:x:0:0:root:/:/bin/sh' >"$rootfs/etc/passwd"
echo 'root:x:0:' >"$rootfs/etc/group"

layout=$work/layout
mkdir -p "$layout/blobs/sha256"
blob() { # file -> prints "sha256:HEX SIZE" and stores the blob
  local hex size
  hex=$(sha256sum "$1" | cut -d' ' -f1)
  size=$(stat -c %s "$1")
  cp "$1" "$layout/blobs/sha256/$hex"
  echo "sha256:$hex $size"
}

tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$rootfs" -cf "$work/layer.tar" .
read -r layer_digest layer_size < <(blob "$work/layer.tar")

# With ENTRYPOINT-ARGs the image runs them (a container's own command is appended); without,
# its default command is /bin/sh and a container's command replaces it (`podman run IMAGE true`).
if [ $# -gt 0 ]; then
  entrypoint=$(printf '%s\n' "$@" | python3 -c 'import json,sys; print(json.dumps([l.rstrip("\n") for l in sys.stdin if l.strip()]))')
  command="\"Entrypoint\":$entrypoint"
else
  command='"Cmd":["/bin/sh"]'
fi
cat >"$work/config.json" <<JSON
{"architecture":"amd64","os":"linux","config":{$command,"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["$layer_digest"]}}
JSON
read -r config_digest config_size < <(blob "$work/config.json")

cat >"$work/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"$config_digest","size":$config_size},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"$layer_digest","size":$layer_size}]}
JSON
read -r manifest_digest manifest_size < <(blob "$work/manifest.json")

cat >"$layout/index.json" <<JSON
{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"$manifest_digest","size":$manifest_size,"annotations":{"io.containerd.image.name":"$name","org.opencontainers.image.ref.name":"${name##*:}"}}]}
JSON
echo '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$layout" -cf "$out.tmp" .
mv "$out.tmp" "$out"
echo "built $name into $out" >&2
