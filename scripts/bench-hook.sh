#!/usr/bin/env bash
# Measures `tetragon-oci-hook` (the shipped `dist` build) and prints the numbers the project tracks:
#   - median wall time per createRuntime call with --disable-grpc and against the stand-in agent
#     (hyperfine without a shell, `-N`; hyperfine gives the hook an empty stdin, so it finds
#     `config.json` in its working dir, the bundle, as with a runtime that sends no state),
#     next to `/bin/true` for the cost of spawning any process on this machine;
#   - peak RSS of one call in each mode, with the state on stdin (`/usr/bin/time -v`, max over
#     20 runs);
#   - size of the static, stripped binary, and whether it is static.
# "agent down, CEL allows" includes the CEL child process (the hook binary re-executed with the
# hidden `eval-cel` command, memory- and time-capped), which runs only on that fail path.
# Targets (issue 4): < 2 ms and < 4 MiB with --disable-grpc, < 5 ms with the agent, < 6 MB.
# Needs: hyperfine, time (Debian packages `hyperfine`, `time`).
set -euo pipefail
# runc runs a hook with the hook's own environment (none here), not the runtime's: a
# `RUST_BACKTRACE` left in this shell's would make every error the hook builds capture a backtrace.
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
cd "$(dirname "$0")/.."

for tool in hyperfine /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "error: \`$tool\` not found (apt-get install -y hyperfine time)" >&2; exit 2; }
done

triple=$(sed -n 's/^target = "\(.*\)"/\1/p' .cargo/config.toml)
# The hook as shipped (a plain release build of the workspace), then the stand-in agent on its
# own: built together, the agent's dev-only features (tonic's server) would reach the hook.
cargo build --profile dist --quiet -p tetragon-oci-hook
cargo build --profile dist --quiet --example stand-in-agent
rel="target/${triple}/dist"
hook="$PWD/$rel/tetragon-oci-hook"
agent_bin="$PWD/$rel/examples/stand-in-agent"

work=$(mktemp -d)
agent_pid=
cleanup() {
    [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/bundle/rootfs"
cat > "$work/bundle/config.json" <<JSON
{"ociVersion":"1.2.0","root":{"path":"rootfs"},
 "mounts":[{"destination":"/proc","type":"proc","source":"proc","options":["nosuid"]}],
 "annotations":{"io.kubernetes.cri.container-name":"app","io.kubernetes.cri.sandbox-name":"web-0",
  "io.kubernetes.cri.sandbox-namespace":"default","io.kubernetes.cri.sandbox-uid":"6b1f",
  "io.kubernetes.cri.image-name":"localhost/library/nginx:1.27"},
 "linux":{"cgroupsPath":"kubepods-besteffort-pod6b1f.slice:cri-containerd:c0ffee"}}
JSON
printf '{"ociVersion":"1.0.2","id":"c0ffee","status":"creating","pid":1,"bundle":"%s"}' \
    "$work/bundle" > "$work/state.json"

# The agent serves until its stdin closes; a fifo held open by this script keeps it up.
mkfifo "$work/agent.in"
"$agent_bin" "$work/agent.sock" < "$work/agent.in" > "$work/agent.out" &
agent_pid=$!
exec 3> "$work/agent.in"
for _ in $(seq 100); do [ -S "$work/agent.sock" ] && break; sleep 0.05; done
[ -S "$work/agent.sock" ] || { echo "error: stand-in agent did not start" >&2; exit 2; }

log="$work/hook.log"
disabled=("$hook" --log-fname "$log" --disable-grpc createRuntime)
agent=("$hook" --log-fname "$log" --grpc-address "unix://$work/agent.sock" createRuntime)
# Agent down, container allowed by the namespace list / by a CEL expression (the fail path).
down_ns=("$hook" --log-fname "$log" --grpc-address "unix://$work/none.sock" --fail-allow-namespaces default createRuntime)
down_cel=("$hook" --log-fname "$log" --grpc-address "unix://$work/none.sock" --fail-cel-expr false createRuntime)

median_ms() { # hyperfine export, result index -> median in ms
    python3 -c 'import json,sys; print("%.2f" % (json.load(open(sys.argv[1]))["results"][int(sys.argv[2])]["median"]*1000))' "$1" "$2"
}
peak_kib() { # max "Maximum resident set size" over 20 runs, state on stdin
    local max=0 v
    for _ in $(seq 20); do
        v=$( { /usr/bin/time -v "$@" < "$work/state.json" > /dev/null; } 2>&1 \
            | sed -n 's/.*Maximum resident set size (kbytes): //p')
        [ "$v" -gt "$max" ] && max=$v
    done
    echo "$max"
}

(cd "$work/bundle" && hyperfine -N --style none --warmup 30 --runs 500 \
    --export-json "$work/bench.json" /bin/true "${disabled[*]}" "${agent[*]}" \
    "${down_ns[*]}" "${down_cel[*]}" >/dev/null)
rss_disabled=$(peak_kib "${disabled[@]}")
rss_agent=$(peak_kib "${agent[@]}")
sleep 0.3 # the agent prints what it received every 100 ms
calls=$(grep -c cgroupsPath "$work/agent.out" || true)
size=$(stat -c %s "$hook")
static=$(file -b "$hook" 2>/dev/null | grep -o 'static[^,]*linked' || echo "unknown (file not installed)")

printf '%-44s %10s   %s\n' "measure" "value" "target"
printf '%-44s %8s ms\n' "median, /bin/true (process spawn baseline)" "$(median_ms "$work/bench.json" 0)"
printf '%-44s %8s ms   < 2 ms\n' "median, --disable-grpc" "$(median_ms "$work/bench.json" 1)"
printf '%-44s %8s ms   < 5 ms\n' "median, stand-in agent" "$(median_ms "$work/bench.json" 2)"
printf '%-44s %8s ms\n' "median, agent down, namespace allowed" "$(median_ms "$work/bench.json" 3)"
printf '%-44s %8s ms\n' "median, agent down, CEL allows" "$(median_ms "$work/bench.json" 4)"
printf '%-44s %7.2f MiB   < 4 MiB\n' "peak RSS, --disable-grpc" "$(awk "BEGIN{print $rss_disabled/1024}")"
printf '%-44s %7.2f MiB\n' "peak RSS, stand-in agent" "$(awk "BEGIN{print $rss_agent/1024}")"
printf '%-44s %8.2f MB   < 6 MB (%s bytes)\n' "binary size" "$(awk "BEGIN{print $size/1000000}")" "$size"
printf '%-44s %10s\n' "linking" "$static"
printf '%-44s %10s\n' "requests the agent received" "$calls"
printf '%-44s %10s\n' "load average (1 min) during the run" "$(cut -d' ' -f1 /proc/loadavg)"

# One `target:` line per target, for scripts/bench-all.sh.
target() { # work, measured, value, limit (value < limit is met)
    local met="NOT met"
    awk "BEGIN{exit !($3 < $4)}" && met=met
    printf 'target: %s | %s | < %s | %s\n' "$1" "$2" "$5" "$met"
}
m_disabled=$(median_ms "$work/bench.json" 1)
m_agent=$(median_ms "$work/bench.json" 2)
mib_disabled=$(awk "BEGIN{printf \"%.2f\", $rss_disabled/1024}")
mb=$(awk "BEGIN{printf \"%.2f\", $size/1000000}")
target "hook createRuntime, --disable-grpc (median)" "$m_disabled ms" "$m_disabled" 2 "2 ms"
target "hook createRuntime, stand-in agent (median)" "$m_agent ms" "$m_agent" 5 "5 ms"
target "hook peak RSS, --disable-grpc" "$mib_disabled MiB" "$mib_disabled" 4 "4 MiB"
target "hook binary size (dist, static, stripped)" "$mb MB" "$mb" 5 "5 MB"
