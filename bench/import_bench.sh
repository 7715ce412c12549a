#!/usr/bin/env bash
# Import benchmark (not a test): decoding an image with ~1 GiB of data into a raw target
# through the mount vs qemu-img convert -n into the same target, in one run, plain and
# compressed, with the daemon's peak RSS.
#
# An import through the mount reports success only once the target is fsynced.
# qemu-img convert's default cache mode for the target never flushes, so its time leaves
# the disk writes pending; with -t writeback it flushes at the end like the import. Both
# are timed; the durable pair is the like-for-like comparison. Each timed run starts from
# a fresh sparse target after sync, so no earlier run's writeback is counted.
#
# Usage: bench/import_bench.sh [path/to/qcowfs]     (run as root; needs qemu-img, fuse3)
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

# 4 GiB disk with 1 GiB of data in 256 pieces of 4 MiB; random data for the plain image,
# base64 text (compressible) for the compressed one.
make_raw() {  # path, generator
  truncate -s 4G "$1"
  for slot in $(shuf -i 0-1023 -n 256 --random-source=<(yes)); do
    $2 | dd of="$1" bs=4M seek="$slot" conv=notrunc status=none iflag=fullblock
  done
}
random_4m() { head -c 4M /dev/urandom; }
text_4m() { head -c 3M /dev/urandom | base64 -w 0; }  # exactly 4 MiB of text
make_raw "$work/plain.raw" random_4m
make_raw "$work/text.raw" text_4m
qemu-img convert -f raw -O qcow2 "$work/plain.raw" "$work/plain.qcow2"
qemu-img convert -c -f raw -O qcow2 "$work/text.raw" "$work/compressed.qcow2"
rm -f "$work/plain.raw" "$work/text.raw"

fresh_target() { rm -f "$work/target"; truncate -s 4G "$work/target"; sync; }

bench() {  # image label
  local img=$1 label=$2 ours=() theirs=() durable=() hwm=0
  cat "$img" > /dev/null  # both read the image from the page cache
  for ((i = 0; i < RUNS; i++)); do
    fresh_target
    "$QCOWFS" mount --import "$work/target" "$mnt"
    pid=$(pgrep -n -x qcowfs)
    t=$(now); cat "$img" > "$mnt/import.qcow2"; ours+=("$(elapsed "$t")")
    grep -q "state: done" "$mnt/import.status"
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    fusermount3 -u "$mnt"
    qemu-img compare -q -f qcow2 -F raw "$img" "$work/target"

    fresh_target
    t=$(now); qemu-img convert -n -f qcow2 -O raw "$img" "$work/target"; theirs+=("$(elapsed "$t")")

    fresh_target
    t=$(now); qemu-img convert -n -t writeback -f qcow2 -O raw "$img" "$work/target"
    durable+=("$(elapsed "$t")")
  done
  local o q d
  o=$(min "${ours[@]}") q=$(min "${theirs[@]}") d=$(min "${durable[@]}")
  echo "$label image ($(($(stat -c %s "$img") >> 20)) MiB), best of $RUNS:"
  printf '  cat IMAGE > MNT/import.qcow2 (fsynced)        %6.3f s\n' "$o"
  printf '  qemu-img convert -n -t writeback (flushed)    %6.3f s\n' "$d"
  printf '  qemu-img convert -n (default: never flushes)  %6.3f s\n' "$q"
  echo "  import / durable qemu-img:  $(ratio "$o" "$d") (target <= 1.2 for the plain image)"
  echo "  import / default qemu-img:  $(ratio "$o" "$q")"
  echo "  daemon peak RSS: $((hwm / 1024)) MiB ($hwm KiB; target < 64 MiB)"
}
bench "$work/plain.qcow2" "plain"
bench "$work/compressed.qcow2" "compressed"

# A huge metadata-first image: RSS must not grow with the virtual size.
qemu-img create -q -f qcow2 "$work/huge.qcow2" 8T
qemu-io -c 'write -P 0x11 0 64M' -c 'write -P 0x22 4T 64M' -c 'write -P 0x33 8191G 64M' \
  "$work/huge.qcow2" > /dev/null
rm -f "$work/target"
truncate -s 8T "$work/target"
"$QCOWFS" mount --import "$work/target" "$mnt"
pid=$(pgrep -n -x qcowfs)
t=$(now); cat "$work/huge.qcow2" > "$mnt/import.qcow2"; huge_time=$(elapsed "$t")
grep -q "state: done" "$mnt/import.status"
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
fusermount3 -u "$mnt"
qemu-img compare -q -f qcow2 -F raw "$work/huge.qcow2" "$work/target"
printf '8 TiB image with 192 MiB of data into an 8 TiB sparse target: %.3f s, daemon peak RSS %d MiB (%d KiB; target < 64 MiB)\n' \
  "$huge_time" $((hwm / 1024)) "$hwm"
