#!/bin/sh
# Runs a test suite twice, with KRED_SCHEME=1d then KRED_SCHEME=2d: every case in both
# launch schemes of a GPU backend. The second run finds the first's kernels in the cache.
# Exit status: 1 if either run failed, 77 if both skipped, else 0.
status=77
for scheme in 1d 2d; do
	echo "== KRED_SCHEME=$scheme $*"
	KRED_SCHEME=$scheme "$@"
	rc=$?
	if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
		status=1
	elif [ $rc -eq 0 ] && [ $status -eq 77 ]; then
		status=0
	fi
done
exit $status
