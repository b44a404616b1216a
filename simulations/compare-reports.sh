#!/usr/bin/env bash
# Proves that two builds of `shoal simulate` write byte-identical outputs for the scenario library.
#
#   simulations/compare-reports.sh A B              # each of A, B: a `shoal` binary or a directory
#   simulations/compare-reports.sh --generate BIN DIR
#
# A binary is run on every scenario (default simulations/scenarios/*.toml) at every seed (default
# 1 2 3), one directory per run holding report.json, the SVG plots, the stdout summary (with the
# output directory written as <out>) and the exit code. A directory is taken as such an earlier
# output. The two trees are then compared with `diff -r`; the exit code is diff's.
# Runs from the repository root, so the replay commands in the reports name the same relative
# paths whichever checkout or binary produced them.
# Environment: SEEDS="1 2 3", SCENARIOS="simulations/scenarios/*.toml" (a glob or a list).
set -euo pipefail
cd "$(dirname "$0")/.."

seeds=${SEEDS:-"1 2 3"}
scenarios=${SCENARIOS:-"simulations/scenarios/*.toml"}

generate() {
  local bin=$1 dir=$2
  [[ -x $bin && ! -d $bin ]] || { echo "not an executable: $bin" >&2; exit 2; }
  mkdir -p "$dir"
  local file name seed out rc
  # shellcheck disable=SC2086 # the scenario list is a glob on purpose
  for file in $scenarios; do
    name=$(basename "$file" .toml)
    for seed in $seeds; do
      out="$dir/$name-$seed"
      rm -rf "$out"
      mkdir -p "$out"
      rc=0
      "$bin" simulate "$file" --seed "$seed" --out "$out" >"$out/stdout.raw" 2>"$out/stderr" || rc=$?
      sed "s#$out#<out>#g" "$out/stdout.raw" >"$out/summary.txt"
      rm "$out/stdout.raw"
      echo "$rc" >"$out/exit-code"
      echo "$name seed $seed: exit $rc"
    done
  done
}

tree() {
  local arg=$1 label=$2
  if [[ -d $arg ]]; then
    echo "$arg"
  else
    local dir
    dir=$(mktemp -d "${TMPDIR:-/tmp}/sim-reports-$label.XXXXXX")
    generate "$arg" "$dir" >&2
    echo "$dir"
  fi
}

if [[ ${1:-} == --generate ]]; then
  [[ $# -eq 3 ]] || { echo "usage: $0 --generate BIN DIR" >&2; exit 2; }
  generate "$2" "$3"
  exit 0
fi
[[ $# -eq 2 ]] || { echo "usage: $0 A B   (each a shoal binary or a directory of reports)" >&2; exit 2; }
a=$(tree "$1" a)
b=$(tree "$2" b)
runs=$(find "$a" -name report.json | wc -l)
files=$(find "$a" -type f | wc -l)
if diff -r "$a" "$b"; then
  echo "identical: $runs runs, $files files ($a vs $b)"
else
  echo "DIFFERENT: $a vs $b" >&2
  exit 1
fi
