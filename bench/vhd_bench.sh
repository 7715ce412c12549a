#!/usr/bin/env bash
# VHD benchmark (not a test): exports of VHDs vs qemu-img, measured in this run.
#  1. a 4 GiB dynamic VHD holding 1 GiB of data: cat MNT/disk.qcow2 (fresh mount) vs
#     qemu-img convert -f vpc -O qcow2 to tmpfs;
#  2. a 2040 GiB dynamic VHD (the VHD limit) with 20,000 scattered 2 MiB blocks: time until
#     the mount answers, and the daemon's peak RSS after reading the whole export.
#
# Usage: bench/vhd_bench.sh [path/to/qcowfs]     (run as root; needs qemu-img, fuse3)
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

# Writes `count` pieces of `length` bytes at the start of distinct random slots of `stride`
# bytes below `slots` slots (seeded by `seed`) into a VHD.
fill() {
  python3 -c '
import random, sys
image, count, slots, stride, length, seed = sys.argv[1], *map(int, sys.argv[2:])
for s in random.Random(seed).sample(range(slots), count):
    print("write -P %d %d %d" % (1 + s % 200, s * stride, length))' "$@" |
    qemu-io -f vpc "$1" > /dev/null
}

cd "$work"
# 1. 4 GiB dynamic VHD, 1 GiB of data in 256 scattered 4 MiB pieces.
qemu-img create -q -f vpc -o subformat=dynamic,force_size=on dyn.vhd 4G
fill dyn.vhd 256 1024 $((4 << 20)) $((4 << 20)) 1
cat dyn.vhd > /dev/null  # every timing below reads the VHD from the page cache
fuse=() convert=() size=0
for ((i = 0; i < RUNS; i++)); do
  "$QCOWFS" mount --export "$work/dyn.vhd" "$mnt"
  size=$(stat -c %s "$mnt/disk.qcow2")
  t=$(now); cat "$mnt/disk.qcow2" > /dev/null; fuse+=("$(elapsed "$t")")
  fusermount3 -u "$mnt"
  rm -f "$shm/out.qcow2"
  t=$(now); qemu-img convert -f vpc -O qcow2 "$work/dyn.vhd" "$shm/out.qcow2"
  convert+=("$(elapsed "$t")")
done
f=$(min "${fuse[@]}") c=$(min "${convert[@]}")
echo "4 GiB dynamic VHD, 1 GiB of data, best of $RUNS runs:"
printf '  cat MNT/disk.qcow2 (fresh mount)     %6.3f s  (%d MiB image)\n' "$f" $((size >> 20))
printf '  qemu-img convert -f vpc to tmpfs     %6.3f s\n' "$c"
echo "  qcowfs vs qemu-img convert: $(ratio "$c" "$f")x faster (target >= 1.5x)"

# 2. 2040 GiB dynamic VHD, 20,000 scattered 2 MiB blocks with 4 KiB written in each.
qemu-img create -q -f vpc -o subformat=dynamic,force_size=on big.vhd 2040G
fill big.vhd 20000 $((2040 * 512)) $((2 << 20)) 4096 2
cat big.vhd > /dev/null
measure_mount "$work/big.vhd"
echo "2040 GiB dynamic VHD, 20,000 scattered blocks ($(du -m big.vhd | cut -f1) MiB file):"
printf '  mount usable after %.3f s (target < 1 s)\n' "$mount_time"
echo "  daemon peak RSS after reading the whole export: $((hwm / 1024)) MiB ($hwm KiB)"
