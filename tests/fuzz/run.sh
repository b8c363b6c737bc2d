#!/usr/bin/env bash
# run.sh FUZZER CORPUS DICT ARTIFACTS: one harness's test in a -Dfuzz=true build. It runs
# every input of the committed corpus once (a crash there fails the test at once), then
# fuzzes from the corpus for $KRED_FUZZ_SECONDS (default 20) beyond the time libFuzzer
# spends running the corpus again when it starts. New inputs go to a scratch folder,
# never into the committed corpus; a crash is saved under ARTIFACTS and named in the log
# (commit it to the corpus once fixed).
set -euo pipefail
exe=$1 corpus=$2 dict=$3 artifacts=$4
seconds=${KRED_FUZZ_SECONDS:-20}

[ -d "$corpus" ] && [ -n "$(ls -A "$corpus")" ] || { echo "no corpus in $corpus" >&2; exit 1; }
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$artifacts"
args=(-max_len=4096 -rss_limit_mb=2048 -timeout=60 -close_fd_mask=3
      -artifact_prefix="$artifacts/")
[ -f "$dict" ] && args+=(-dict="$dict")

echo "replaying the corpus: $(ls "$corpus" | wc -l) inputs"
start=$SECONDS
"$exe" "${args[@]}" -runs=0 "$corpus"
replay=$((SECONDS - start))
echo "replayed in ${replay} s; fuzzing ${seconds} s"
"$exe" "${args[@]}" -print_final_stats=1 -max_total_time=$((replay + seconds)) \
	"$scratch" "$corpus"
