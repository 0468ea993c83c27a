#!/usr/bin/env bash
# Whole-process numbers for tetragon-oci-hook-setup: shipped (`dist`) binary size, peak RSS and wall time
# of each patch command on the bundled containerd 1.7 default config (and a 1 MB config).
# Needs GNU time (/usr/bin/time); uses hyperfine for timings when it is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each binary built alone, as shipped: built together, cargo would unify the features of the
# hook's library and link the hook's gRPC client, CEL and regex engines into the setup tool.
cargo build --profile dist --quiet -p tetragon-rthooks --bin tetragon-oci-hook-setup
cargo build --profile dist --quiet -p tetragon-oci-hook --bin tetragon-oci-hook
# .cargo/config.toml names the build target (static linking), so release builds land in
# target/<host triple>/dist (the shipped profile).
host=$(rustc -vV | sed -n 's/^host: //p')
bin=target/$host/dist/tetragon-oci-hook-setup
hook=target/$host/dist/tetragon-oci-hook
printf 'binary: %s bytes (stripped: %s)\n' "$(stat -c %s "$bin")" \
  "$(file -b "$bin" | grep -q 'not stripped' && echo no || echo yes)"
size_target() { # label, file, limit in bytes, limit shown
  local n
  n=$(stat -c %s "$2")
  printf 'target: %s | %s bytes | < %s | %s\n' "$1" "$n" "$4" \
    "$([ "$n" -lt "$3" ] && echo met || echo 'NOT met')"
}
size_target "setup binary size (dist)" "$bin" 3000000 "3 MB"
size_target "hook binary size (dist)" "$hook" 5000000 "5 MB"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cfg=examples/containerd-1.7-config.toml
big="$tmp/big.toml"
cp "$cfg" "$big"
i=0
while [ "$(stat -c %s "$big")" -lt 1048576 ]; do
  printf '\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.h%d]\n  runtime_type = "io.containerd.runc.v2"\n  base_runtime_spec = ""\n' "$i" >> "$big"
  i=$((i + 1))
done

run() { # label, args...
  local label=$1; shift
  local rss
  /usr/bin/time -o "$tmp/rss" -f '%M' "$bin" "$@" >/dev/null 2>&1
  rss=$(tail -1 "$tmp/rss")
  printf '%-44s peak RSS %6s KiB\n' "$label" "$rss"
}
run "enable-nri, 1.7 default" patch-containerd-conf enable-nri --config-file "$cfg" --dry-run
run "add-oci-hook, 1.7 default" patch-containerd-conf add-oci-hook --config-file "$cfg" --dry-run
run "enable-annotations, examples/crio.conf" patch-crio-conf enable-annotations --config-file examples/crio.conf --annotations a,b --dry-run
run "enable-nri, 1 MB" patch-containerd-conf enable-nri --config-file "$big" --dry-run
run "add-oci-hook, 1 MB" patch-containerd-conf add-oci-hook --config-file "$big" --dry-run

if command -v hyperfine >/dev/null; then
  hyperfine -N --warmup 5 --runs 200 --style basic \
    "$bin patch-containerd-conf enable-nri --config-file $cfg --dry-run --quiet" \
    "$bin patch-containerd-conf add-oci-hook --config-file $cfg --dry-run --quiet" 2>/dev/null |
    grep -E 'Benchmark|Time'
else
  echo "hyperfine not installed: no wall-time numbers (apt-get install hyperfine)"
fi
