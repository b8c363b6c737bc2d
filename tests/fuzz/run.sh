#!/usr/bin/env bash
# run.sh FUZZER CORPUS DICT ARTIFACTS: one harness's test in a -Dfuzz=true build. libFuzzer
# first runs every input of the committed corpus (a crash there fails the test at once),
# then fuzzes from it for $KRED_FUZZ_SECONDS (default 20). New inputs go to a scratch
# folder, never into the committed corpus; a crash is saved under ARTIFACTS and named in
# the log (commit it to the corpus once fixed).
set -euo pipefail
exe=$1 corpus=$2 dict=$3 artifacts=$4
seconds=${KRED_FUZZ_SECONDS:-20}

[ -d "$corpus" ] && [ -n "$(ls -A "$corpus")" ] || { echo "no corpus in $corpus" >&2; exit 1; }
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$artifacts"
args=(-max_total_time="$seconds" -max_len=4096 -rss_limit_mb=2048 -timeout=60
      -close_fd_mask=3 -print_final_stats=1
      -artifact_prefix="$artifacts/")
[ -f "$dict" ] && args+=(-dict="$dict")
echo "corpus: $(ls "$corpus" | wc -l) inputs; fuzzing $seconds s"
exec "$exe" "${args[@]}" "$scratch" "$corpus"
