#!/usr/bin/env bash
# The figures of the documentation site, as capsim itself writes them: run from the project root
# with capsim installed (the kernel-db extra for validate). About 2 minutes on 2 cores.
set -euo pipefail
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
capsim search -o "$out/search"
capsim simulate --model Llama-3.1-8B --hardware H100 --qps 2,4,6,8,10 -o "$out/sweep"
capsim validate -o "$out/validate"
cp "$out/search/capacity.png" docs/img/search-capacity.png
cp "$out/sweep/load_curves.png" docs/img/load-curves.png
cp "$out/validate/validation.png" docs/img/validation.png
echo "wrote docs/img/search-capacity.png, load-curves.png, validation.png"
