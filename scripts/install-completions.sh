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
set -euo pipefail
cd "$(dirname "$0")/.."

prefix="${1:-/usr/local}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

if [ -n "${DOCGEN:-}" ]; then
  "$DOCGEN" all "$out" 2>/dev/null
else
  echo "building docgen (first time: about a minute) ..." >&2
  cargo run -q -p docgen -- all "$out" 2>/dev/null
fi

name=tetragon-oci-hook-setup
install -D -m 0644 "$out/bash/$name" "$prefix/share/bash-completion/completions/$name"
install -D -m 0644 "$out/zsh/_$name" "$prefix/share/zsh/site-functions/_$name"
install -D -m 0644 "$out/fish/$name.fish" "$prefix/share/fish/vendor_completions.d/$name.fish"
install -d -m 0755 "$prefix/share/man/man1"
install -m 0644 "$out"/man1/*.1 "$prefix/share/man/man1/"
echo "installed completions and $(ls "$out"/man1 | wc -l) man pages under $prefix/share" >&2
