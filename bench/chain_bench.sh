#!/usr/bin/env bash
# Chain benchmark (not a test): exports of qcow2 chains vs qemu-img, measured in this run.
#  1. a 4 GiB chain of 3 layers holding 1 GiB of data: cat MNT/disk.qcow2 (fresh mount) vs
#     qemu-img convert -O qcow2 top.qcow2 to tmpfs;
#  2. the delta of a top layer (100 MiB changed over a 1 GiB base): cat of the
#     --relative-to mount vs qemu-img convert -O qcow2 -B base.qcow2 to tmpfs;
#  3. a 16 TiB qcow2 with 100,000 scattered 64 KiB clusters: time until the mount answers,
#     and the daemon's peak RSS after reading the whole export.
#
# Usage: bench/chain_bench.sh [path/to/qcowfs]     (run as root; needs qemu-img, fuse3)
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

# Writes `count` 4 MiB pieces of pattern `pattern` at distinct random 4 MiB slots below
# `slots` * 4 MiB (seeded by `seed`) into a qcow2 image.
fill() {
  python3 -c '
import random, sys
image, count, slots, pattern, seed = sys.argv[1], *map(int, sys.argv[2:])
for s in random.Random(seed).sample(range(slots), count):
    print("write -P %d %d 4M" % (pattern + s % 50, s << 22))' "$@" | qemu-io "$1" > /dev/null
}

# Times `cat MNT/disk.qcow2` on a fresh mount with ARGS and qemu-img convert with QARGS.
compare() {
  local args=$1 qargs=$2 fuse=() convert=() size=0
  for ((i = 0; i < RUNS; i++)); do
    # shellcheck disable=SC2086
    "$QCOWFS" mount $args "$mnt"
    size=$(stat -c %s "$mnt/disk.qcow2")
    t=$(now); cat "$mnt/disk.qcow2" > /dev/null; fuse+=("$(elapsed "$t")")
    fusermount3 -u "$mnt"
    rm -f "$shm/out.qcow2"
    # shellcheck disable=SC2086
    t=$(now); qemu-img convert $qargs "$shm/out.qcow2"; convert+=("$(elapsed "$t")")
  done
  f=$(min "${fuse[@]}") c=$(min "${convert[@]}")
  printf '  cat MNT/disk.qcow2 (fresh mount)     %6.3f s  (%d MiB image)\n' "$f" $((size >> 20))
  printf '  qemu-img convert to tmpfs            %6.3f s\n' "$c"
  echo "  qcowfs vs qemu-img convert: $(ratio "$c" "$f")x faster (target >= $3x)"
}

cd "$work"
# 1. 4 GiB, three layers: 600 MiB in the base, 250 MiB in the middle, 174 MiB on top.
qemu-img create -q -f qcow2 base.qcow2 4G
fill base.qcow2 150 1024 1 1
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2
fill mid.qcow2 62 1024 60 2
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2
fill top.qcow2 44 1024 120 3
cat ./*.qcow2 > /dev/null  # every timing below reads the layers from the page cache
echo "4 GiB chain of 3 layers, 1 GiB of data, best of $RUNS runs:"
compare "--export $work/top.qcow2" "-O qcow2 $work/top.qcow2" 1.5

# 2. A delta: 100 MiB changed over a 1 GiB base.
qemu-img create -q -f qcow2 dbase.qcow2 4G
fill dbase.qcow2 256 1024 1 4
qemu-img create -q -f qcow2 -b dbase.qcow2 -F qcow2 dtop.qcow2
fill dtop.qcow2 25 1024 70 5
cat dbase.qcow2 dtop.qcow2 > /dev/null
echo "Delta of a top layer, 100 MiB over a 1 GiB base, best of $RUNS runs:"
compare "--export $work/dtop.qcow2 --relative-to $work/dbase.qcow2" \
  "-O qcow2 -B $work/dbase.qcow2 -F qcow2 $work/dtop.qcow2" 2

# 3. 16 TiB with 100,000 scattered 64 KiB clusters.
qemu-img create -q -f qcow2 big.qcow2 16T
python3 -c '
import random
for c in random.Random(6).sample(range(1 << 28), 100000):
    print("write -P %d %d 64k" % (1 + c % 200, c << 16))' | qemu-io big.qcow2 > /dev/null
cat big.qcow2 > /dev/null
measure_mount "$work/big.qcow2"
echo "16 TiB qcow2, 100,000 scattered 64 KiB clusters ($(du -m big.qcow2 | cut -f1) MiB file):"
printf '  mount usable after %.3f s (target < 1 s)\n' "$mount_time"
echo "  daemon peak RSS after reading the whole export: $((hwm / 1024)) MiB ($hwm KiB; target < 32 MiB)"
