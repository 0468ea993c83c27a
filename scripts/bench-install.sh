#!/usr/bin/env bash
# `install` of the hook binary by payload size, with the shipped (`dist`) setup binary: wall time
# (hyperfine, median) of a fresh install and of one over an identical copy, next to `cp` +
# `sync -f` of the same file in the same run, and peak RSS (GNU time) of each.
#
# The payloads are generated here: random bytes with the executable bit, 17.7 MB (the size of
# the upstream hook binary the issue measured), 20 MB and 200 MB. They are not programs: the
# install copies bytes and, without a CEL expression or namespace regex in `hook-args`, never
# runs them. Everything is written under target/bench-install (the disk the repo is on, not a
# tmpfs, so the fsyncs cost what they cost on a node).
#
# Prints one `target:` line per target: 17.7 MB fresh < 30 ms, 17.7 MB identical < 15 ms, peak
# RSS < 6 MiB at every size. BIN=path skips the build and measures that binary; PAYLOADS="label:bytes ..."
# picks the payloads.
set -euo pipefail
cd "$(dirname "$0")/.."

host=$(rustc -vV | sed -n 's/^host: //p')
if [ -z "${BIN:-}" ]; then
  cargo build --profile dist --quiet -p tetragon-rthooks --bin tetragon-oci-hook-setup
  BIN=target/$host/dist/tetragon-oci-hook-setup
fi
BIN=$(realpath "$BIN")
command -v hyperfine >/dev/null || { echo "hyperfine not installed" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "GNU time (/usr/bin/time) not installed" >&2; exit 1; }

work=target/bench-install
rm -rf "$work"
mkdir -p "$work"
work=$(realpath "$work")
trap 'rm -rf "$work"' EXIT

target() { # work measured target met
  printf 'target: %s | %s | %s | %s\n' "$1" "$2" "$3" "$4"
}

median_ms() { # hyperfine json, command index
  sed -n 's/.*"median": *\([0-9.e-]*\).*/\1/p' "$1" | sed -n "$(($2 + 1))p" |
    awk '{ printf "%.1f", $1 * 1000 }'
}

printf '%-8s %10s %12s %14s %12s %14s %12s\n' payload bytes "fresh (p50)" "identical (p50)" "cp+sync (p50)" "RSS fresh" "RSS ident."
for spec in ${PAYLOADS:-17.7MB:17700000 20MB:20000000 200MB:200000000}; do
  label=${spec%%:*} bytes=${spec#*:}
  src="$work/src-$label/tetragon-oci-hook"
  inst="$work/inst-$label" hooks="$work/hooks-$label"
  mkdir -p "$(dirname "$src")" "$inst" "$hooks"
  head -c "$bytes" /dev/urandom >"$src"
  chmod 0755 "$src"
  install=("$BIN" install --interface=oci-hooks "--local-binary=$src" "--local-install-dir=$inst"
    --host-install-dir=/opt/tetragon "--oci-hooks.local-dir=$hooks" --log-level=error)
  clean="rm -f $inst/tetragon-oci-hook $hooks/tetragon-oci-hook.json $inst/cp-copy"
  runs=$([ "$bytes" -gt 100000000 ] && echo 5 || echo 30)
  # Fresh: nothing installed before each run. Identical: installed, same bytes.
  hyperfine -N --warmup 2 --runs "$runs" --prepare "$clean" --export-json "$work/fresh.json" \
    "${install[*]}" >/dev/null 2>&1
  "${install[@]}" >/dev/null 2>&1
  hyperfine -N --warmup 2 --runs "$runs" --export-json "$work/ident.json" \
    "${install[*]}" >/dev/null 2>&1
  hyperfine --warmup 2 --runs "$runs" --prepare "rm -f $inst/cp-copy" --export-json "$work/cp.json" \
    "cp $src $inst/cp-copy && sync -f $inst/cp-copy" >/dev/null 2>&1
  fresh=$(median_ms "$work/fresh.json" 0)
  ident=$(median_ms "$work/ident.json" 0)
  cp=$(median_ms "$work/cp.json" 0)
  eval "$clean"
  /usr/bin/time -o "$work/rss" -f '%M' "${install[@]}" >/dev/null 2>&1
  rss_fresh=$(tail -1 "$work/rss")
  /usr/bin/time -o "$work/rss" -f '%M' "${install[@]}" >/dev/null 2>&1
  rss_ident=$(tail -1 "$work/rss")
  cmp -s "$src" "$inst/tetragon-oci-hook" || { echo "installed copy differs from $src" >&2; exit 1; }
  printf '%-8s %10s %9s ms %12s ms %9s ms %10s KiB %10s KiB\n' "$label" "$bytes" "$fresh" "$ident" "$cp" "$rss_fresh" "$rss_ident"
  if [ "$label" = 17.7MB ]; then
    met=$(awk -v m="$fresh" 'BEGIN { print (m < 30) ? "met" : "NOT met" }')
    target "install wall, fresh, 17.7 MB binary (p50; cp+sync -f: $cp ms)" "$fresh ms" "< 30 ms" "$met"
    met=$(awk -v m="$ident" 'BEGIN { print (m < 15) ? "met" : "NOT met" }')
    target "install wall, over an identical copy, 17.7 MB binary (p50)" "$ident ms" "< 15 ms" "$met"
  fi
  for pair in "fresh:$rss_fresh" "identical:$rss_ident"; do
    kib=${pair#*:}
    met=$([ "$kib" -lt 6144 ] && echo met || echo "NOT met")
    target "install peak RSS, ${pair%%:*}, $label binary" "$(awk -v k="$kib" 'BEGIN { printf "%.1f", k / 1024 }') MiB" "< 6 MiB" "$met"
  done
  rm -rf "$(dirname "$src")" "$inst" "$hooks"
done
