#!/usr/bin/env python3
"""Adds up the results of every suite in the given meson build dirs, and prints one
closing line: 'tests: N passed, N failed, N skipped'.

Usage: test_summary.py [--strict] BUILD_DIR...

A build dir without a test log fails (its tests did not run). With --strict (what
`bash setup.sh test` passes), a whole suite that skipped (exit status 77) is a failure:
that build was configured to have every device, so a skip means something is missing.
Check suites are counted by their 'Checks: N, Failures: N, Errors: N' lines, pytest
suites by their closing line, other suites as one test each; 'skipped: N ...' lines
count N skipped cases (tests that could not run here, counted as neither)."""
import json
import os
import re
import sys

args = sys.argv[1:]
strict = "--strict" in args
dirs = [a for a in args if a != "--strict"]

passed = failed = skipped = 0
problems = []
for d in dirs:
    log = os.path.join(d, "meson-logs", "testlog.json")
    if not os.path.exists(log):
        problems.append(f"{d}: no test log ({log}): its tests did not run")
        continue
    n_suites = 0
    for line in open(log):
        t = json.loads(line)
        n_suites += 1
        name, result = t.get("name", "?"), t.get("result")
        out = t.get("stdout", "") or ""
        if result == "SKIP" and strict:
            problems.append(f"{d}: suite {name} skipped in a strict run")
        elif result not in ("OK", "SKIP", "EXPECTEDFAIL"):
            problems.append(f"{d}: suite {name}: {result}")
        checks = re.findall(r"Checks: (\d+), Failures: (\d+), Errors: (\d+)", out)
        for c, f, e in checks:
            passed += int(c) - int(f) - int(e)
            failed += int(f) + int(e)
        # pytest's closing line: "== 12 passed, 1 failed, 2 skipped in 3.4s =="
        pytest = re.findall(r"^=+ (.*\d+ (?:passed|failed|error|errors|skipped)"
                            r".*) in [\d.]+s.*=+$", out, re.M)
        for summary in pytest:
            for n, what in re.findall(r"(\d+) (\w+)", summary):
                if what == "passed":
                    passed += int(n)
                elif what in ("failed", "error", "errors"):
                    failed += int(n)
                elif what == "skipped":
                    skipped += int(n)
        # suites that skip cases say so on lines 'skipped: N ...'
        for n in re.findall(r"^skipped: (\d+)", out, re.M):
            skipped += int(n)
        if result == "SKIP":
            skipped += 1
        # A suite with no counts of its own is one test, unless it said it skipped
        # (a suite on a device this machine lacks): then it is not a pass.
        if not checks and not pytest:
            if result == "OK" and not re.search(r"^skipped: ", out, re.M):
                passed += 1
            elif result not in ("OK", "SKIP"):
                failed += 1
    if n_suites == 0:
        problems.append(f"{d}: the test log lists no suite")
for p in problems:
    print(f"test_summary: {p}")
print(f"tests: {passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed or problems else 0)
