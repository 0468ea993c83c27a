#!/usr/bin/env bash
# Installs the shell completions (bash, zsh, fish) and the man pages of tetragon-oci-hook-setup
# under a prefix, generated from the tool's clap definitions by the dev-only `docgen` crate.
#
#   scripts/install-completions.sh [PREFIX]      # default PREFIX: /usr/local
#
# Files: PREFIX/share/bash-completion/completions/tetragon-oci-hook-setup,
# PREFIX/share/zsh/site-functions/_tetragon-oci-hook-setup,
# PREFIX/share/fish/vendor_completions.d/tetragon-oci-hook-setup.fish,
# PREFIX/share/man/man1/tetragon-oci-hook-setup*.1.
# DOCGEN=/path/to/docgen uses that binary instead of building it (`cargo run -p docgen`).
#
# PREFIX must be an absolute path other than `/`, without `.` or `..` parts; it may not exist
# yet. Running it again gives the same files. Nothing is written outside PREFIX: a directory
# under it that resolves elsewhere (a symlink) is refused before anything is written, and each
# file is replaced by a rename, never written through a link at its name. Exit 2 on a refusal.
set -euo pipefail

die() { # message, help
  echo "error: $1" >&2
  echo "help: $2" >&2
  exit 2
}

prefix="${1:-/usr/local}"
[ $# -le 1 ] || die "more than one argument" "give one PREFIX, e.g. \`$0 /usr/local\`"
case "$prefix" in
  /*) ;;
  *) die "PREFIX \`$prefix\` is not an absolute path" \
    "give an absolute directory, e.g. \`/usr/local\` or \`\$HOME/.local\`" ;;
esac
prefix="${prefix%/}"
[ -n "$prefix" ] || die "PREFIX \`/\` would put files in /share" \
  "give a prefix such as \`/usr/local\` or \`/usr\`"
case "$prefix/" in
  *$'\n'* | */./* | */../* | *//*)
    die "PREFIX \`$prefix\` has a \`.\`, \`..\` or empty part, or a newline" \
      "give the directory plainly, e.g. \`/usr/local\`" ;;
esac
if [ -e "$prefix" ] && [ ! -d "$prefix" ]; then
  die "PREFIX \`$prefix\` exists and is not a directory" "give a directory"
fi

name=tetragon-oci-hook-setup
dirs=(share/bash-completion/completions share/zsh/site-functions
  share/fish/vendor_completions.d share/man/man1)

# Every directory from the prefix down to each target that exists already must resolve under
# the prefix (checked before anything is written).
real_prefix=$(realpath -m -- "$prefix")
for d in "${dirs[@]}"; do
  p="$prefix"
  for part in ${d//\// }; do
    p="$p/$part"
    if [ -L "$p" ] || { [ -e "$p" ] && [ ! -d "$p" ]; }; then
      real=$(realpath -m -- "$p")
      case "$real/" in
        "$real_prefix"/*/) [ -d "$real" ] && continue ;;
      esac
      die "\`$p\` is a link or not a directory (it resolves to \`$real\`); nothing written" \
        "remove it or give another PREFIX: files go only under PREFIX"
    fi
  done
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
out="$work/out"
cd "$(dirname "$0")/.."
# docgen's `wrote ...` lines are shown only if it fails (with its error).
if [ -n "${DOCGEN:-}" ]; then
  "$DOCGEN" all "$out" 2>"$work/log" || { cat "$work/log" >&2; exit 1; }
else
  echo "building docgen (first time: about a minute) ..." >&2
  cargo build -q -p docgen
  cargo run -q -p docgen -- all "$out" 2>"$work/log" || { cat "$work/log" >&2; exit 1; }
fi

put() { # source, directory under the prefix: a temporary file in that directory, renamed
  local dest="$prefix/$2/$(basename "$1")" tmp
  install -d -m 0755 "$prefix/$2"
  tmp=$(mktemp "$prefix/$2/.$(basename "$1").XXXXXX")
  cat "$1" >"$tmp"
  chmod 0644 "$tmp"
  mv -fT "$tmp" "$dest"
}
put "$out/bash/$name" share/bash-completion/completions
put "$out/zsh/_$name" share/zsh/site-functions
put "$out/fish/$name.fish" share/fish/vendor_completions.d
n=0
for page in "$out"/man1/*.1; do
  put "$page" share/man/man1
  n=$((n + 1))
done
echo "installed completions and $n man pages under $prefix/share" >&2
