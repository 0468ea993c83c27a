#!/usr/bin/env bash
# Patcher time and memory by input size: `patch-containerd-conf enable-nri` and `add-oci-hook`
# (`--dry-run`, the whole parse-edit-verify-diff path without the write) on containerd configs of
# about 10 KB, 100 KB, 1 MB, 10 MB and 64 MB, with the shipped (`dist`) binary.
#
# The configs are generated here: containerd 1.7's `config default` (tests/fixtures) grown with
# runtime-handler tables (a comment, four keys, an `options` sub-table), the shape a node with many
# runtime handlers has, not one giant string. Peak RSS from GNU time (/usr/bin/time), wall time
# from hyperfine (median; fewer runs for the big inputs). Prints one `target:` line per target:
# RSS <= 24 x input + 4 MiB at every size, 1 MB < 100 ms, 10 MB < 1 s, and the per-MB time of
# 64 MB against 1 MB (linear: a ratio near 1; the target is below 2).
#
# SIZES="10K 1M" limits the sizes; BIN=path skips the build and measures that binary.
set -euo pipefail
cd "$(dirname "$0")/.."

host=$(rustc -vV | sed -n 's/^host: //p')
if [ -z "${BIN:-}" ]; then
  cargo build --profile dist --quiet -p tetragon-rthooks --bin tetragon-oci-hook-setup
  BIN=target/$host/dist/tetragon-oci-hook-setup
fi
command -v hyperfine >/dev/null || { echo "hyperfine not installed" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "GNU time (/usr/bin/time) not installed" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
base=tests/fixtures/containerd/containerd-1.7.24-config-default-v2.toml

bytes_of() { # 10K, 1M, ... -> bytes; 64M stays a table under the 64 MiB the tool reads
  local n=${1%[KM]} b
  case $1 in *K) b=$((n * 1024)) ;; *M) b=$((n * 1048576)) ;; *) b=$n ;; esac
  echo $((b > 67104768 ? 67104768 : b))
}

grow() { # size out
  awk -v size="$1" '
    { print; n += length($0) + 1 }
    END {
      for (i = 0; n < size; i++) {
        s = sprintf("\n# runtime handler %d, added by the node'"'"'s provisioning\n" \
          "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.handler-%d]\n" \
          "  runtime_type = \"io.containerd.runc.v2\"\n" \
          "  base_runtime_spec = \"\"\n" \
          "  pod_annotations = [\"io.example/a-%d\", \"io.example/b-%d\"]\n" \
          "  [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.handler-%d.options]\n" \
          "    BinaryName = \"/usr/local/bin/runc-%d\"\n" \
          "    SystemdCgroup = true\n", i, i, i, i, i, i)
        printf "%s", s
        n += length(s)
      }
    }' "$base" >"$2"
}

target() { # work measured target met
  printf 'target: %s | %s | %s | %s\n' "$1" "$2" "$3" "$4"
}

declare -A ms_per_mb
printf '%-14s %-8s %12s %12s %14s %12s\n' edit input bytes "wall (p50)" "peak RSS" "RSS/input"
for size in ${SIZES:-10K 100K 1M 10M 64M}; do
  cfg="$tmp/config-$size.toml"
  grow "$(bytes_of "$size")" "$cfg"
  len=$(stat -c %s "$cfg")
  case $size in
    10K | 100K) runs=50 ;;
    1M) runs=20 ;;
    10M) runs=5 ;;
    *) runs=2 ;;
  esac
  for edit in enable-nri add-oci-hook; do
    args=(patch-containerd-conf "$edit" --config-file "$cfg" --dry-run --quiet)
    /usr/bin/time -o "$tmp/rss" -f '%M' "$BIN" "${args[@]}" >/dev/null 2>"$tmp/err" ||
      { cat "$tmp/err" >&2; exit 1; }
    rss_kib=$(tail -1 "$tmp/rss")
    hyperfine -N --warmup 1 --runs "$runs" --export-json "$tmp/h.json" \
      "$BIN ${args[*]}" >/dev/null 2>&1
    median_s=$(sed -n 's/.*"median": *\([0-9.e-]*\).*/\1/p' "$tmp/h.json" | head -1)
    ms=$(awk -v s="$median_s" 'BEGIN { printf "%.1f", s * 1000 }')
    ratio=$(awk -v r="$rss_kib" -v l="$len" 'BEGIN { printf "%.1f", r * 1024 / l }')
    printf '%-14s %-8s %12s %9s ms %10s KiB %11sx\n' "$edit" "$size" "$len" "$ms" "$rss_kib" "$ratio"
    limit_kib=$(awk -v l="$len" 'BEGIN { printf "%d", (24 * l + 4 * 1048576) / 1024 }')
    met=$([ "$rss_kib" -le "$limit_kib" ] && echo met || echo "NOT met")
    target "$edit peak RSS, $size config" "$((rss_kib / 1024)) MiB" \
      "<= 24 x input + 4 MiB ($((limit_kib / 1024)) MiB)" "$met"
    case $size in
      1M | 10M)
        limit_ms=$([ "$size" = 1M ] && echo 100 || echo 1000)
        met=$(awk -v m="$ms" -v l="$limit_ms" 'BEGIN { print (m < l) ? "met" : "NOT met" }')
        target "$edit wall, $size config (p50)" "$ms ms" "< $limit_ms ms" "$met"
        ;;
    esac
    ms_per_mb[$edit-$size]=$(awk -v m="$ms" -v l="$len" 'BEGIN { printf "%.3f", m / (l / 1048576) }')
  done
done
for edit in enable-nri add-oci-hook; do
  a=${ms_per_mb[$edit-1M]:-} b=${ms_per_mb[$edit-64M]:-}
  [ -n "$a" ] && [ -n "$b" ] || continue
  r=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", b / a }')
  met=$(awk -v r="$r" 'BEGIN { print (r < 2) ? "met" : "NOT met" }')
  target "$edit linear, per-MB time 64 MB / 1 MB" "$r ($b / $a ms per MB)" "< 2" "$met"
done
