#!/usr/bin/env bash
# `make test`: go vet, then every test with the race detector, integration tests included.
# The full verbose log goes to test.log; the terminal gets each package's result, every
# failed or skipped test, and proof that the integration tests started real servers (the
# harness logs each PostgreSQL cluster and etcd it starts). Exit code: go test's.
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=${TEST_LOG:-test.log}
go vet ./... || exit 1
go test -race -count=1 -timeout 40m -v "$@" ./... > "$LOG" 2>&1
rc=$?
grep -E '^(ok|FAIL|---) |^--- (FAIL|SKIP)|^panic:|DATA RACE' "$LOG" | grep -v -- '--- PASS' || true
# Each failed test's own output (go test -v marks whose lines follow with "=== RUN/CONT/NAME"),
# its last 40 lines, so a failure on CI can be read without the full log.
for name in $(grep -oE '^--- FAIL: [^ ]+' "$LOG" | awk '{print $3}' | sort -u); do
  echo
  echo "output of $name (last 40 lines):"
  awk -v t="$name" '/^=== (RUN|CONT|NAME|PAUSE) / { cur = $3 }
    /^(ok|FAIL|PASS)/ { cur = "" }
    cur == t || index(cur, t "/") == 1 { print "  " $0 }' "$LOG" | tail -40
done
echo
echo "real servers started by the tests (first of each kind per package):"
awk '/testenv: PostgreSQL started/ && !pg[FILENAME]++ { sub(/^ +/, ""); print "  " $0 }
     /testenv: etcd started/ && !et[FILENAME]++ { sub(/^ +/, ""); print "  " $0 }' "$LOG" | sort -u | head -4
printf '  %d PostgreSQL clusters and %d etcd servers in all\n' \
  "$(grep -c 'testenv: PostgreSQL started' "$LOG")" "$(grep -c 'testenv: etcd started' "$LOG")"
pass=$(grep -cE '^\s*--- PASS' "$LOG"); fail=$(grep -cE '^\s*--- FAIL' "$LOG"); skip=$(grep -cE '^\s*--- SKIP' "$LOG")
echo "full log: $LOG"
echo "tests: $pass passed, $fail failed, $skip skipped"
exit $rc
