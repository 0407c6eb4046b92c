#!/usr/bin/env bash
# Runs the given test command, shows its output, and ends with one line that totals every
# "test result:" line of cargo's output: "total: N passed, N failed[, N skipped]".
# cargo's own last line belongs to whichever crate ran last (often a doc-test with 0 tests),
# so without this the run's closing line would understate what ran.
set -uo pipefail
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
awk '/^test result:/ {
        for (i = 1; i <= NF; i++) {
            if ($(i) ~ /^passed;?$/)  p += $(i-1)
            if ($(i) ~ /^failed;?$/)  f += $(i-1)
            if ($(i) ~ /^ignored;?$/) s += $(i-1)
        }
     }
     END { printf "total: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
