#!/usr/bin/env bash
# Runs real MLIR (`mlir-opt --allow-unregistered-dialect`) over every filetest input and expected output
# (insta .snap bodies), plus every *.mlir under the directories given as arguments (e.g. an IR dump dir).
# Inputs in filetests/diagnostics/ are deliberately invalid and skipped.
# Exit status: 0 when mlir-opt accepts every file, 1 otherwise, 2 when mlir-opt is missing.
# mlir-opt: $MLIR_OPT, else mlir-opt-22, else mlir-opt (Debian: apt-get install mlir-22-tools).
set -u
here="$(cd "$(dirname "$0")" && pwd)"
opt="${MLIR_OPT:-}"
if [ -z "$opt" ]; then
  for c in mlir-opt-22 mlir-opt; do
    if command -v "$c" >/dev/null 2>&1; then opt="$c"; break; fi
  done
fi
if [ -z "$opt" ]; then
  echo "mlir-opt-check: no mlir-opt found (install mlir-22-tools or set MLIR_OPT)" >&2
  exit 2
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0
check() { # file [label]
  local f="$1" label="${2:-$1}"
  if "$opt" --allow-unregistered-dialect "$f" -o /dev/null 2>"$tmp/err"; then
    pass=$((pass + 1))
  else
    fail=$((fail + 1))
    echo "FAIL: $label" >&2
    sed 's/^/  /' "$tmp/err" >&2
  fi
}
while IFS= read -r -d '' f; do
  case "$f" in */diagnostics/*) continue ;; esac
  check "$f"
done < <(find "$here/filetests" -name '*.mlir' -print0 | sort -z)
n=0
while IFS= read -r -d '' s; do
  case "$s" in */diagnostics/*) continue ;; esac
  n=$((n + 1))
  # An insta snapshot is a `---` delimited header followed by the body.
  awk 'h < 2 { if ($0 == "---") h++; next } { print }' "$s" > "$tmp/snap$n.mlir"
  check "$tmp/snap$n.mlir" "$s"
done < <(find "$here/filetests" -name '*.snap' -print0 | sort -z)
for d in "$@"; do
  while IFS= read -r -d '' f; do check "$f"; done < <(find "$d" -name '*.mlir' -print0 | sort -z)
done
echo "mlir-opt-check ($("$opt" --version 2>/dev/null | grep -io 'llvm version [0-9.]*' | head -1)): $pass passed, $fail failed"
[ "$fail" -eq 0 ]
