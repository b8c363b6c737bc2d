#!/bin/sh
# Runs a test suite twice, with KRED_SCHEME=1d then KRED_SCHEME=2d: every case in both
# launch schemes of a GPU backend. The second run finds the first's kernels in the cache.
# Exit status: 1 if either run failed, or if one scheme skipped (77) while the other ran:
# the device is the same, so a skip in one scheme alone is a fault, never a pass;
# 77 if both skipped (no device: the suite itself fails instead in a strict_tests build);
# else 0.
ran=0 skipped=0 failed=0
for scheme in 1d 2d; do
	echo "== KRED_SCHEME=$scheme $*"
	KRED_SCHEME=$scheme "$@"
	rc=$?
	case $rc in
	0) ran=$((ran + 1)) ;;
	77) skipped=$((skipped + 1)) ;;
	*) failed=1 ;;
	esac
done
if [ $failed -ne 0 ]; then
	exit 1
elif [ $skipped -eq 2 ]; then
	exit 77
elif [ $skipped -ne 0 ]; then
	echo "error: one scheme skipped while the other ran"
	exit 1
fi
exit 0
