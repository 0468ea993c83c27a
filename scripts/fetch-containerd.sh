#!/usr/bin/env bash
# Fetch real containerd releases (plus the runc of the same Debian suite) for
# the end-to-end tests:
#
#   containerd 1.7  <- Debian 13 "trixie"  package `containerd` (+ `runc`)
#   containerd 2.1  <- Debian "unstable"   package `containerd` (+ `runc`)
#
# Each release is unpacked with `dpkg -x` into
#   ${TETRAGON_RTHOOKS_CACHE:-$HOME/.cache/tetragon-rthooks}/containerd-<rel>/
# so the binaries end up at <dir>/usr/bin/containerd and <dir>/usr/bin/runc.
#
# How: for every suite a private apt configuration is built in a temporary
# directory (own sources list with only that suite, own lists/state/cache
# dirs, empty dpkg status, no host hooks), `apt-get update` + `apt-get
# download` run against it, and the .debs are extracted.  Nothing is
# installed and the machine's apt configuration/state is never modified.
# The mirror URI is read from the machine's apt sources.
#
# Archive keys: the repository is verified with the machine's
# /usr/share/keyrings/debian-archive-keyring.gpg.  If that keyring is too old
# to verify the suite (e.g. a new release key), the script falls back to
# fetching the suite's own `debian-archive-keyring` package with
# [trusted=yes] -- used ONLY to obtain that keyring file -- and then
# re-downloads the suite's indices verified against it (trust on first use;
# a warning is printed when this happens).
#
# glibc: the Go binaries from the containerd package only need glibc >= 2.34
# and run as-is on bookworm.  runc from trixie/sid is linked against glibc
# >= 2.38 (bookworm has 2.36).  When a package needs a newer glibc than the
# host has, the suite's libc6 (and the package's other lib* dependencies) are
# unpacked into <dir>/compat/ and the package's executables are re-pointed at
# that loader/libraries with patchelf (interpreter + DT_RPATH).  Patching the
# binary itself, rather than wrapping it, keeps /proc/self/exe pointing at
# runc, which `runc init` relies on.  patchelf is used from PATH or, if
# absent, downloaded (not installed) from the host's own suite.
#
# Idempotent: a release whose binaries are present and report the expected
# version is left alone.  Output: one line per release on stdout,
#   containerd-<rel> <version> <path to containerd>
# diagnostics go to stderr.
#
# Usage: scripts/fetch-containerd.sh [--force] [1.7] [2.1]
#   --force   re-fetch even if the cache looks complete
#   Environment: TETRAGON_RTHOOKS_CACHE  cache root (see above)
#                DEBIAN_MIRROR           override the mirror URI
#                DEBIAN_ARCHIVE_KEYRING  keyring to verify the suites with
#                                        (default: the machine's)
set -euo pipefail

CACHE_ROOT="${TETRAGON_RTHOOKS_CACHE:-$HOME/.cache/tetragon-rthooks}"
HOST_KEYRING="${DEBIAN_ARCHIVE_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}"

# release -> Debian suite
declare -A SUITE=([1.7]=trixie [2.1]=sid)

WORK=""
cleanup() {
    if [[ -n "$WORK" && -d "$WORK" ]]; then
        rm -rf -- "$WORK"
    fi
}
trap cleanup EXIT

log() { printf 'fetch-containerd: %s\n' "$*" >&2; }
die() {
    printf 'fetch-containerd: ERROR: %s\n' "$*" >&2
    exit 1
}

# ---------------------------------------------------------------------------
# mirror discovery (from the machine's apt sources, never hard-coded)

# Print the URI of the first enabled "deb" entry of a deb822 .sources file
# whose suites are not security/updates/backports suites.
mirror_from_deb822() {
    awk '
        function flush() {
            if (uri != "" && types ~ /(^|[ \t])deb([ \t]|$)/ && enabled != "no" && plain) { print uri; found = 1; exit }
            uri = ""; types = ""; enabled = ""; plain = 0
        }
        /^[ \t]*#/ { next }
        /^[ \t]*$/ { flush(); next }
        {
            key = tolower($1); sub(/:$/, "", key)
            if (key == "uris") uri = $2
            else if (key == "types") { types = $0; sub(/^[^:]*:/, "", types) }
            else if (key == "enabled") enabled = tolower($2)
            else if (key == "suites") {
                for (i = 2; i <= NF; i++)
                    if ($i !~ /-(security|updates|backports|proposed-updates)$/ && $i !~ /\//) plain = 1
            }
        }
        END { if (!found) flush() }
    ' "$1"
}

# Same for a classic one-line-style sources.list: deb [opts] URI suite comp...
mirror_from_list() {
    awk '
        $1 != "deb" { next }
        {
            i = 2
            if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
            uri = $i; suite = $(i + 1)
            if (suite !~ /-(security|updates|backports|proposed-updates)$/ && suite !~ /\//) { print uri; exit }
        }
    ' "$1"
}

find_mirror() {
    if [[ -n "${DEBIAN_MIRROR:-}" ]]; then
        printf '%s\n' "$DEBIAN_MIRROR"
        return
    fi
    local f uri=""
    for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list.d/*.sources; do
        [[ -f "$f" ]] || continue
        uri=$(mirror_from_deb822 "$f")
        [[ -n "$uri" ]] && break
    done
    if [[ -z "$uri" ]]; then
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [[ -f "$f" ]] || continue
            uri=$(mirror_from_list "$f")
            [[ -n "$uri" ]] && break
        done
    fi
    [[ -n "$uri" ]] || die "could not find a Debian mirror URI in /etc/apt/sources.list{,.d/} (set DEBIAN_MIRROR)"
    printf '%s\n' "${uri%/}"
}

# ---------------------------------------------------------------------------
# private apt configuration

# apt_setup <dir> <suite> <keyring|trusted>
# Creates <dir>/apt.conf and friends; afterwards use: apt_get <dir> ...
apt_setup() {
    local d=$1 suite=$2 key=$3 opts
    mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/sources.list.d" \
        "$d/preferences.d" "$d/debs"
    : >"$d/status"
    if [[ "$key" == trusted ]]; then
        opts="trusted=yes"
    else
        opts="signed-by=$key"
    fi
    # A snapshot mirror serves Release files whose Valid-Until has passed.
    [[ "$MIRROR" == *snapshot* ]] && opts+=" check-valid-until=no"
    printf 'deb [%s] %s %s main\n' "$opts" "$MIRROR" "$suite" >"$d/sources.list"
    # Read after the host's apt.conf.d (so e.g. proxy settings still apply);
    # drop host hooks that would act on the host's caches.
    cat >"$d/apt.conf" <<EOF
#clear APT::Update::Post-Invoke-Success;
#clear APT::Update::Post-Invoke;
#clear APT::Update::Pre-Invoke;
#clear DPkg::Post-Invoke;
#clear DPkg::Pre-Invoke;
Dir::State "$d";
Dir::State::lists "$d/lists";
Dir::State::status "$d/status";
Dir::Etc::SourceList "$d/sources.list";
Dir::Etc::SourceParts "$d/sources.list.d";
Dir::Etc::Preferences "$d/preferences";
Dir::Etc::PreferencesParts "$d/preferences.d";
Dir::Cache "$d/cache";
Dir::Cache::pkgcache "pkgcache.bin";
Dir::Cache::srcpkgcache "srcpkgcache.bin";
Acquire::Languages "none";
Acquire::GzipIndexes "false";
Acquire::PDiffs "false";
Acquire::IndexTargets::deb::DEP-11::DefaultEnabled "false";
Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled "false";
Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled "false";
Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled "false";
Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled "false";
APT::Sandbox::User "$(id -un)";
EOF
}

apt_get() {
    local d=$1
    shift
    apt-get -q -c "$d/apt.conf" "$@"
}

# apt_update <dir> <suite>: update a private config for <suite>, verifying
# with the host keyring, falling back to the suite's own keyring package.
apt_update() {
    local d=$1 suite=$2 out
    apt_setup "$d" "$suite" "$HOST_KEYRING"
    if out=$(apt_get "$d" update 2>&1) && ! grep -qE '^(W|E): .*(NO_PUBKEY|not signed|EXPKEYSIG|is not valid)' <<<"$out"; then
        return 0
    fi
    log "host keyring $HOST_KEYRING cannot verify '$suite':"
    grep -E '^(W|E):' <<<"$out" >&2 || true
    log "WARNING: bootstrapping the archive keyring from '$suite' itself ([trusted=yes] only to fetch debian-archive-keyring)"
    local b="$d.keyring"
    apt_setup "$b" "$suite" trusted
    apt_get "$b" update >/dev/null
    (cd "$b/debs" && apt_get "$b" download debian-archive-keyring >/dev/null)
    mkdir -p "$b/x"
    dpkg -x "$b"/debs/debian-archive-keyring_*.deb "$b/x"
    local k="$b/x/usr/share/keyrings/debian-archive-keyring.gpg"
    [[ -e "$k" ]] || k="$b/x/usr/share/keyrings/debian-archive-keyring.pgp"
    [[ -e "$k" ]] || die "no debian-archive-keyring.{gpg,pgp} in the keyring package of '$suite'"
    # bookworm's apt only accepts binary keyrings named *.gpg
    cp -L -- "$k" "$d.archive-keyring.gpg"
    rm -rf -- "$d" "$b"
    apt_setup "$d" "$suite" "$d.archive-keyring.gpg"
    apt_get "$d" update >/dev/null || die "apt-get update for '$suite' failed even with its own keyring"
}

# ---------------------------------------------------------------------------
# glibc compatibility for binaries built against a newer glibc than the host's

host_glibc() { getconf GNU_LIBC_VERSION | awk '{print $2}'; }

# Minimum libc6 version from a .deb's Depends ("" if none)
deb_min_libc() {
    dpkg-deb -f "$1" Depends | tr ',' '\n' |
        sed -nE 's/^[[:space:]]*libc6[[:space:]]*\(>=[[:space:]]*([^)[:space:]]+)\).*/\1/p' | head -n1
}

# lib* dependencies of a .deb (package names only)
deb_lib_deps() {
    dpkg-deb -f "$1" Depends | tr ',' '\n' |
        sed -nE 's/^[[:space:]]*(lib[a-z0-9.+-]+).*/\1/p' | sort -u
}

# Libraries downloaded up front together with containerd/runc, so that the
# common case needs a single `apt-get download` per suite.
COMPAT_LIBS=(libc6 libseccomp2)

# Obtain patchelf into $WORK/patchelf (no installation).  Returns non-zero
# instead of exiting: it runs speculatively, in parallel with the downloads.
fetch_patchelf() {
    local d="$WORK/patchelf"
    mkdir -p "$d/debs" "$d/x"
    # Download from the host's own suite, first with the host's apt state;
    # if its lists are absent use a private config for the host suite.
    if ! (cd "$d/debs" && apt-get -q -o "APT::Sandbox::User=$(id -un)" download patchelf >/dev/null 2>&1); then
        local codename
        # shellcheck disable=SC1091
        codename=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")
        [[ -n "$codename" ]] || return 1
        (apt_update "$d/apt" "$codename" && cd "$d/debs" && apt_get "$d/apt" download patchelf >/dev/null) || return 1
    fi
    dpkg -x "$d"/debs/patchelf_*.deb "$d/x" && "$d/x/usr/bin/patchelf" --version >/dev/null
}

patchelf_bin() {
    if command -v patchelf >/dev/null; then
        command -v patchelf
    elif [[ -x "$WORK/patchelf/x/usr/bin/patchelf" ]]; then
        printf '%s\n' "$WORK/patchelf/x/usr/bin/patchelf"
    else
        die "patchelf is needed (to run $*) but neither installed nor downloadable"
    fi
}

# make_compat <aptdir> <target dir> <deb>...: unpack the suite's libc6 (+ the
# packages' lib* deps) into <target>/compat and point the packages' ELF
# executables at that dynamic loader and library directory.
make_compat() {
    local ad=$1 dir=$2
    shift 2
    local debs=("$@") libs=(libc6) missing=() deb f l
    for deb in "${debs[@]}"; do
        while read -r f; do
            [[ -n "$f" && "$f" != libc6 ]] && libs+=("$f")
        done < <(deb_lib_deps "$deb")
    done
    for l in "${libs[@]}"; do
        compgen -G "$ad/debs/${l}_*.deb" >/dev/null || missing+=("$l")
    done
    if ((${#missing[@]})); then
        (cd "$ad/debs" && apt_get "$ad" download "${missing[@]}" >/dev/null)
    fi
    log "host glibc $(host_glibc) is too old for ${debs[*]##*/}; bundling ${libs[*]} into $dir/compat"
    mkdir -p "$dir/compat"
    for l in "${libs[@]}"; do
        dpkg -x "$(compgen -G "$ad/debs/${l}_*.deb" | head -n1)" "$dir/compat"
    done

    local pe interp ld
    pe=$(patchelf_bin "${debs[*]##*/}")
    for deb in "${debs[@]}"; do
        while read -r f; do
            f="$dir/${f#./}"
            [[ -f "$f" && ! -L "$f" && -x "$f" ]] || continue
            interp=$("$pe" --print-interpreter "$f" 2>/dev/null) || continue
            ld=""
            if [[ -e "$dir/compat$interp" ]]; then
                ld=$(readlink -f "$dir/compat$interp")
            elif [[ -e "$dir/compat/usr$interp" ]]; then
                ld=$(readlink -f "$dir/compat/usr$interp")
            fi
            [[ -n "$ld" ]] || die "bundled libc6 has no $interp"
            "$pe" --set-interpreter "$ld" --force-rpath --set-rpath "$(dirname "$ld")" "$f"
            log "patched ${f#"$dir"/} to use $ld"
        done < <(dpkg-deb --fsys-tarfile "$deb" | tar -t)
    done
}

# ---------------------------------------------------------------------------

# Version of a containerd binary ("" if it does not run)
containerd_version() {
    local v
    v=$("$1" --version 2>/dev/null | awk '$1 == "containerd" { print $3; exit }') || return 0
    printf '%s\n' "${v#v}"
}

runc_version() {
    "$1" --version 2>/dev/null | awk '$1 == "runc" && $2 == "version" { print $3; exit }' || true
}

is_ready() {
    local rel=$1 dir=$2 v
    [[ -f "$dir/.complete" ]] || return 1
    v=$(containerd_version "$dir/usr/bin/containerd")
    [[ "$v" == "$rel".* ]] || return 1
    [[ -n "$(runc_version "$dir/usr/bin/runc")" ]] || return 1
}

# Phase 1 (runs in parallel, in a subshell): private apt update, download,
# extraction straight into the final directory (patchelf needs final paths;
# .complete is written last, in phase 2, and marks a usable tree).
download_release() {
    local rel=$1 suite=${SUITE[$1]} dir="$CACHE_ROOT/containerd-$1"
    local ad="$WORK/apt-$suite" deb
    log "containerd $rel: fetching from Debian '$suite' via $MIRROR"
    apt_update "$ad" "$suite"
    (cd "$ad/debs" && apt_get "$ad" download containerd runc "${COMPAT_LIBS[@]}" >/dev/null)
    if ! compgen -G "$ad/debs/containerd_*.deb" >/dev/null || ! compgen -G "$ad/debs/runc_*.deb" >/dev/null; then
        die "download of containerd/runc from '$suite' failed"
    fi
    rm -rf -- "$dir"
    mkdir -p "$dir"
    for deb in "$ad"/debs/containerd_*.deb "$ad"/debs/runc_*.deb; do dpkg -x "$deb" "$dir"; done
}

# Phase 2: fix up glibc if needed, verify, mark complete.
install_release() {
    local rel=$1 suite=${SUITE[$1]} dir="$CACHE_ROOT/containerd-$1"
    local ad="$WORK/apt-$suite" deb
    local debs=("$ad"/debs/containerd_*.deb "$ad"/debs/runc_*.deb)

    local host need=() min
    host=$(host_glibc)
    for deb in "${debs[@]}"; do
        min=$(deb_min_libc "$deb")
        if [[ -n "$min" ]] && dpkg --compare-versions "$host" lt "$min"; then
            need+=("$deb")
        fi
    done
    if ((${#need[@]})); then
        make_compat "$ad" "$dir" "${need[@]}"
    fi

    local v rv
    v=$(containerd_version "$dir/usr/bin/containerd")
    if [[ "$v" != "$rel".* ]]; then
        "$dir/usr/bin/containerd" --version >&2 || true
        die "$dir/usr/bin/containerd: expected version $rel.x, got '${v:-<does not run>}' (did '$suite' move to another containerd release?)"
    fi
    rv=$(runc_version "$dir/usr/bin/runc")
    if [[ -z "$rv" ]]; then
        "$dir/usr/bin/runc" --version >&2 || true
        die "$dir/usr/bin/runc does not run on this machine"
    fi
    {
        printf 'suite=%s\nmirror=%s\n' "$suite" "$MIRROR"
        for deb in "${debs[@]}"; do
            printf '%s=%s\n' "$(dpkg-deb -f "$deb" Package)" "$(dpkg-deb -f "$deb" Version)"
        done
        if ((${#need[@]})); then printf 'compat=%s\n' "$dir/compat"; fi
    } >"$dir/SOURCE"
    touch "$dir/.complete"
}

main() {
    local force=0 rels=() a
    for a in "$@"; do
        case "$a" in
        --force) force=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            [[ -n "${SUITE[$a]:-}" ]] || die "unknown release '$a' (known: ${!SUITE[*]})"
            rels+=("$a")
            ;;
        esac
    done
    ((${#rels[@]})) || rels=(1.7 2.1)

    mkdir -p "$CACHE_ROOT"
    # Serialize concurrent runs (e.g. parallel test jobs).
    if command -v flock >/dev/null; then
        exec 9>"$CACHE_ROOT/.fetch.lock"
        flock 9
    fi

    local rel dir todo=()
    for rel in "${rels[@]}"; do
        dir="$CACHE_ROOT/containerd-$rel"
        if ((force)) || ! is_ready "$rel" "$dir"; then
            todo+=("$rel")
        fi
    done

    if ((${#todo[@]})); then
        local c pids=() i failed=0
        for c in apt-get dpkg dpkg-deb getconf; do
            command -v "$c" >/dev/null || die "'$c' is required"
        done
        MIRROR=$(find_mirror)
        WORK=$(mktemp -d "${TMPDIR:-/tmp}/fetch-containerd.XXXXXX")
        chmod 755 "$WORK"
        for rel in "${todo[@]}"; do
            download_release "$rel" &
            pids+=($!)
        done
        # Speculatively fetch patchelf meanwhile (only used if some binary
        # needs a newer glibc than the host's).
        if ! command -v patchelf >/dev/null; then
            fetch_patchelf || log "note: could not download patchelf"
        fi
        for i in "${!pids[@]}"; do
            wait "${pids[$i]}" || { log "containerd ${todo[$i]}: download failed"; failed=1; }
        done
        ((failed == 0)) || die "download failed"
        for rel in "${todo[@]}"; do install_release "$rel"; done
    fi

    for rel in "${rels[@]}"; do
        dir="$CACHE_ROOT/containerd-$rel"
        printf 'containerd-%s %s %s\n' "$rel" "$(containerd_version "$dir/usr/bin/containerd")" "$dir/usr/bin/containerd"
    done
}

main "$@"
