#!/usr/bin/env bash
# Checks that vendor/foca is exactly foca 2.0.0 as published plus vendor/foca-patches/, offline.
#
#   vendor/check-foca.sh              re-create upstream + series in a temp dir, diff with vendor/foca
#   vendor/check-foca.sh --unpack DIR the same as a git repo in DIR (upstream, then one commit per
#                                     patch), to edit the series; vendor/README.md says how to
#                                     regenerate it.
#
# The upstream source is vendor/foca-2.0.0.crate, the registry's tarball, checked against the
# sha256 crates.io's index gives for it (cargo verifies the same checksum when it downloads).
set -euo pipefail
cd "$(dirname "$0")"

crate=foca-2.0.0.crate
sha256=cfdf03bd44a0044a679493054cf0a78696bcb8dc4140dadaa350af0a04b3bbe1

unpack=
if (($#)); then
  if [[ $1 == --unpack && $# == 2 ]]; then
    unpack=$2
  else
    echo "usage: $0 [--unpack DIR]" >&2
    exit 2
  fi
fi

actual=$(sha256sum "$crate" | cut -d' ' -f1)
if [[ $actual != "$sha256" ]]; then
  echo "check-foca: $crate has sha256 $actual, crates.io's is $sha256" >&2
  exit 1
fi

if [[ -n $unpack ]]; then
  [[ ! -e $unpack ]] || { echo "check-foca: $unpack exists" >&2; exit 2; }
  mkdir -p "$unpack"
  work=$(cd "$unpack" && pwd)
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi

tar -xzf "$crate" -C "$work"
tree=$work/foca-2.0.0
# A repo of its own, so that git never looks for one above the temp dir.
git() { command git -C "$tree" -c user.name=check-foca -c user.email=check-foca@localhost "$@"; }
git init -q
if [[ -n $unpack ]]; then
  git add -f -A
  git commit -q -m "foca 2.0.0 as published on crates.io"
  git am -q --keep-cr "$PWD"/foca-patches/*.patch
  git log --oneline
  echo "check-foca: $tree holds upstream and the series, one commit each"
  exit 0
fi
for patch in "$PWD"/foca-patches/*.patch; do
  if ! git apply "$patch"; then
    echo "check-foca: $(basename "$patch") does not apply" >&2
    exit 1
  fi
done
rm -rf "$tree/.git"

if ! diff -r --exclude=target "$tree" foca; then
  echo "check-foca: vendor/foca is not foca 2.0.0 plus vendor/foca-patches/ (diff above:" \
    "< upstream + series, > vendor/foca)" >&2
  exit 1
fi
echo "check-foca: vendor/foca is foca 2.0.0 plus $(ls foca-patches/*.patch | wc -l) patches"
