#!/usr/bin/env bash
# Builds the tetragon-rthooks image (Containerfile: FROM scratch, our two static binaries and a
# static busybox `tail`) with podman, pulling nothing, and prints its size.
#
# Usage: scripts/build-image.sh [--arch amd64|arm64] [--profile dist|release|debug]
#                               [--no-cargo | --bins DIR] [--store DIR] [--tag IMAGE]
#
#   --arch      image architecture (default: this machine's). arm64 builds the binaries with
#               `cargo build --target aarch64-unknown-linux-gnu` (needs that Rust target and an
#               aarch64 linker, e.g. `rustup target add aarch64-unknown-linux-gnu` and Debian's
#               gcc-aarch64-linux-gnu with CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER set) and
#               a static arm64 busybox (`apt-get download busybox-static:arm64`, after
#               `dpkg --add-architecture arm64 && apt-get update`), then `podman build --arch
#               arm64` (FROM scratch, no RUN step: no emulation needed to build).
#   --profile   cargo profile of the binaries (default: dist, what we ship: fat LTO). The tests
#               build their image with `release` (same code, no LTO: minutes quicker).
#   --no-cargo  use the binaries already built for that profile (do not run cargo).
#   --bins DIR  take both binaries from DIR instead (no cargo; e.g. the tests' own debug build),
#               stripped into the image (`strip -o`: the same code, without debug info).
#   --store DIR podman storage under DIR (root/, runroot/, tmp/, vfs driver), as the tests' podman
#               (tests/support/podman.rs); default: podman's own store.
#   --tag       image name (default: localhost/tetragon-rthooks:<version>); also tagged :latest
#               (of the same name).
#
# A rebuild moves the tags; the image they named before is removed when nothing names it any
# more (kept, with a note, while a container still uses it), so rebuilding never piles up
# untagged images.
#
# Prints `image: NAME` and `size: N bytes (X MB)` (uncompressed, podman's figure) on stdout.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
arch=
profile=dist
cargo_build=1
store=
tag=
bins=
while [ $# -gt 0 ]; do
  case $1 in
    --arch) arch=${2:?--arch needs a value}; shift 2 ;;
    --arch=*) arch=${1#*=}; shift ;;
    --profile) profile=${2:?--profile needs a value}; shift 2 ;;
    --profile=*) profile=${1#*=}; shift ;;
    --no-cargo) cargo_build=; shift ;;
    --bins) bins=${2:?--bins needs a value}; cargo_build=; shift 2 ;;
    --bins=*) bins=${1#*=}; cargo_build=; shift ;;
    --store) store=${2:?--store needs a value}; shift 2 ;;
    --store=*) store=${1#*=}; shift ;;
    --tag) tag=${2:?--tag needs a value}; shift 2 ;;
    --tag=*) tag=${1#*=}; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument \`$1\`" >&2; echo "help: see $0 --help" >&2; exit 2 ;;
  esac
done

host_arch=$(dpkg --print-architecture 2>/dev/null || uname -m)
# Without dpkg, `uname -m` names it the kernel's way: compared below with the normalised $arch.
case $host_arch in x86_64) host_arch=amd64 ;; aarch64) host_arch=arm64 ;; esac
case ${arch:-$host_arch} in
  amd64|x86_64) arch=amd64; triple=x86_64-unknown-linux-gnu ;;
  arm64|aarch64) arch=arm64; triple=aarch64-unknown-linux-gnu ;;
  *) echo "error: unsupported architecture \`${arch:-$host_arch}\`" >&2; echo "help: pass --arch amd64 or --arch arm64" >&2; exit 2 ;;
esac

# The workspace version (`[workspace.package] version`), the image's tag.
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$root/Cargo.toml")
[ -n "$version" ] || { echo "error: no [workspace.package] version in Cargo.toml" >&2; exit 1; }
name=localhost/tetragon-rthooks
[ -n "$tag" ] || tag=$name:$version
# `:latest` of the same name (a tag after the last `/`, if any, replaced).
case ${tag##*/} in
  *:*) latest=${tag%:*}:latest ;;
  *) latest=$tag:latest ;;
esac

command -v podman >/dev/null || {
  echo "error: podman not found" >&2
  echo "help: install it (Debian: apt-get install podman); the image is built with \`podman build\`" >&2
  exit 2
}

podman_() {
  if [ -n "$store" ]; then
    podman --root "$store/root" --runroot "$store/runroot" --tmpdir "$store/tmp" \
      --storage-driver vfs --cgroup-manager cgroupfs --events-backend file "$@"
  else
    podman "$@"
  fi
}
if [ -n "$store" ]; then
  mkdir -p "$store/tmp"
  store=$(cd "$store" && pwd)
fi

# 1. Our binaries (static glibc: .cargo/config.toml).
from_dir=$bins
[ -n "$bins" ] || bins=$root/target/$triple/$profile
if [ "$profile" = debug ]; then cargo_profile=(); else cargo_profile=(--profile "$profile"); fi
if [ -n "$cargo_build" ] && [ "$arch" != "$host_arch" ] && command -v rustup >/dev/null \
   && ! rustup target list --installed | grep -qx "$triple"; then
  echo "error: the Rust target \`$triple\` is not installed" >&2
  echo "help: rustup target add $triple; and an $arch linker (Debian: gcc-aarch64-linux-gnu, with" >&2
  echo "      CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc)" >&2
  exit 2
fi
if [ -n "$cargo_build" ]; then
  # One cargo run per binary: in a single run cargo unifies `oci_hook`'s features and links the
  # hook's gRPC, CEL and regex engines into the setup tool as well.
  (cd "$root" && cargo build "${cargo_profile[@]}" --target "$triple" \
    -p tetragon-rthooks --bin tetragon-oci-hook-setup) >&2
  (cd "$root" && cargo build "${cargo_profile[@]}" --target "$triple" \
    -p tetragon-oci-hook --bin tetragon-oci-hook) >&2
fi
for b in tetragon-oci-hook-setup tetragon-oci-hook; do
  if [ ! -f "$bins/$b" ] || [ ! -x "$bins/$b" ]; then
    echo "error: \`$bins/$b\` is not an executable file" >&2
    if [ -n "$from_dir" ]; then
      echo "help: --bins takes the directory holding both binaries (e.g. target/$triple/release)" >&2
    else
      echo "help: build them first (drop --no-cargo), or pass their directory with --bins" >&2
    fi
    exit 2
  fi
  # ELF e_machine (2 bytes, little-endian, at offset 18): 62 x86-64, 183 aarch64.
  machine=$(od -An -tu2 -j18 -N2 "$bins/$b" | tr -d ' ')
  case $arch:$machine in
    amd64:62|arm64:183) ;;
    *)
      echo "error: \`$bins/$b\` is not an $arch binary (ELF machine ${machine:-unknown})" >&2
      echo "help: build it for $triple (cargo build --target $triple), or pass the matching --arch" >&2
      exit 2 ;;
  esac
  # A binary that cannot start is refused here, not on every node: e.g. one linked with DT_RELR
  # against a static glibc older than 2.36 (.cargo/config.toml) links fine and crashes at once.
  # Only for this machine's architecture: a cross build cannot be run here.
  # (In a subshell whose stderr is dropped, not exec-ed into: bash reports a crash of its child
  # on its own stderr.)
  if [ "$arch" = "$host_arch" ] && ! ("$bins/$b" --version >/dev/null 2>&1; exit $?) 2>/dev/null; then
    echo "error: \`$bins/$b --version\` failed: the binary does not run" >&2
    echo "help: build on Debian 12 or newer (glibc >= 2.36; see .cargo/config.toml), then retry" >&2
    exit 2
  fi
done

# 2. A static busybox for `tail`: Debian's busybox-static of the image's architecture.
is_static() { [ -x "$1" ] && ! ldd "$1" >/dev/null 2>&1; }
cache=$root/target/image-cache
mkdir -p "$cache"
busybox=
if [ "$arch" = "$host_arch" ] && is_static /bin/busybox; then
  busybox=/bin/busybox
elif [ "$arch" = "$host_arch" ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get install -y -qq --no-install-recommends busybox-static >&2
  busybox=/bin/busybox
else
  deb=$(ls "$cache"/busybox-static_*_"$arch".deb 2>/dev/null | head -n 1 || true)
  if [ -z "$deb" ]; then
    (cd "$cache" && apt-get download "busybox-static:$arch") >&2
    deb=$(ls "$cache"/busybox-static_*_"$arch".deb | head -n 1)
  fi
  rm -rf "$cache/busybox-$arch"
  dpkg -x "$deb" "$cache/busybox-$arch"
  busybox=$cache/busybox-$arch/bin/busybox
fi

# 3. The build context: rootfs/ as the Containerfile's header lists it.
ctx=$(mktemp -d "$cache/context.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
install -d -m 0755 "$ctx/rootfs/usr/bin"
for b in tetragon-oci-hook-setup tetragon-oci-hook; do
  if [ -n "$from_dir" ]; then
    strip -o "$ctx/rootfs/usr/bin/$b" "$bins/$b"
    chmod 0755 "$ctx/rootfs/usr/bin/$b"
  else
    install -m 0755 "$bins/$b" "$ctx/rootfs/usr/bin/"
  fi
done
install -m 0755 "$busybox" "$ctx/rootfs/usr/bin/busybox"
ln -s busybox "$ctx/rootfs/usr/bin/tail"

# The images the two tags name now: removed below if the build leaves them untagged.
before=$(for t in "$tag" "$latest"; do podman_ image inspect --format '{{.Id}}' "$t" 2>/dev/null || true; done | sort -u)
podman_ build -q --pull=never --network none --arch "$arch" --build-arg "VERSION=$version" \
  -f "$root/Containerfile" -t "$tag" -t "$latest" "$ctx" >/dev/null
id=$(podman_ image inspect --format '{{.Id}}' "$tag")
for old in $before; do
  [ "$old" != "$id" ] || continue
  [ "$(podman_ image inspect --format '{{len .RepoTags}}' "$old" 2>/dev/null || echo 1)" = 0 ] || continue
  podman_ rmi "$old" >/dev/null 2>&1 \
    || echo "note: the previous image ${old:0:12} is untagged but still used; remove it later with \`podman rmi ${old:0:12}\`" >&2
done
size=$(podman_ image inspect --format '{{.Size}}' "$tag")
echo "image: $tag (also $latest), $arch, binaries from $bins"
awk -v s="$size" 'BEGIN { printf "size: %d bytes (%.1f MB)\n", s, s / 1000000 }'
