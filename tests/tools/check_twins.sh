#!/bin/sh
# Checks the sanitized twins of the suites in TESTS_DIR (tests/CMakeLists.txt): each one
# holds AddressSanitizer's checks, which only the sanitized library brings (the suites' own
# objects, and the one naming the binary they run, are compiled plain); its plain suite
# holds none; the sanitized binary BINARY holds them; and there are at least MIN_TWINS.
#
#   check_twins.sh TESTS_DIR BINARY MIN_TWINS
set -u
dir=$1 binary=$2 min=$3 n=0
checked() { nm "$1" | grep -q ' __asan_report_load8$'; }
checked "$binary" || { echo "$binary: no AddressSanitizer checks"; exit 1; }
for twin in "$dir"/*_tests_san; do
  [ -e "$twin" ] || break
  checked "$twin" || { echo "$twin: no AddressSanitizer checks: the plain library was linked"; exit 1; }
  if nm "${twin%_san}" | grep -q __asan_; then echo "${twin%_san}: AddressSanitizer's checks"; exit 1; fi
  n=$((n + 1))
done
[ "$n" -ge "$min" ] || { echo "$n sanitized twins in $dir, expected $min"; exit 1; }
echo "$n sanitized twins checked"
