#!/usr/bin/env bash
# CBT benchmark (not a test): a delta of the blocks a changed-block bitmap names, from a
# 16 TiB disk (its bitmap: 32 MiB of bits, 43 MiB of base64 text).
#  1. mount --export --changed-blocks: time until disk.qcow2 answers, and the daemon's peak
#     RSS then and after reading the whole delta;
#  2. stream --changed-blocks to /dev/null: time and peak RSS;
#  3. the same delta of a 4 GiB disk (1 GiB of data, a tenth of its blocks changed) against
#     qemu-img convert of the whole disk, which is what a backup without the bitmap reads.
#
# Usage: bench/cbt_bench.sh [path/to/qcowfs]     (run as root; needs qemu-img, fuse3, python3)
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

# Writes a bitmap for a disk of $2 bytes with $3 random blocks changed (seed $4) as base64
# text to $1, and writes 4 KiB of random bytes into each changed block of the disk $5.
make_bitmap() {
  python3 - "$@" <<'PY'
import base64, os, random, sys
out, size, count, seed, disk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
blocks = (size + 65535) // 65536
bits = bytearray((blocks + 7) // 8)
fd = os.open(disk, os.O_WRONLY)
for b in random.Random(seed).sample(range(blocks), count):
    bits[b // 8] |= 0x80 >> (b % 8)
    os.pwrite(fd, os.urandom(4096), b * 65536)
os.close(fd)
with open(out, "w") as f:
    f.write(base64.b64encode(bytes(bits)).decode() + "\n")
PY
}

cd "$work"
# 1-2. 16 TiB sparse disk in tmpfs, 20,000 changed blocks scattered over it.
truncate -s 16T "$shm/big.raw"
make_bitmap big.b64 $((16 << 40)) 20000 1 "$shm/big.raw"
t=$(now)
"$QCOWFS" mount --export "$shm/big.raw" --changed-blocks big.b64 --backing-name base.raw "$mnt"
stat "$mnt/disk.qcow2" > /dev/null
mount_time=$(elapsed "$t")
pid=$(pgrep -n -x qcowfs)
hwm_mounted=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
size=$(stat -c %s "$mnt/disk.qcow2")
cat "$mnt/disk.qcow2" > /dev/null
hwm_read=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
fusermount3 -u "$mnt"
t=$(now)
/usr/bin/time -o time.out -f %M "$QCOWFS" stream --source "$shm/big.raw" --changed-blocks big.b64 \
  --backing-name base.raw --destination null:
stream_time=$(elapsed "$t")
echo "16 TiB disk, 20,000 changed blocks, bitmap of $(du -m big.b64 | cut -f1) MiB of base64 text:"
printf '  mount usable after %.3f s (target < 1 s), delta of %d MiB\n' "$mount_time" $((size >> 20))
echo "  daemon peak RSS: $((hwm_mounted / 1024)) MiB mounted, $((hwm_read / 1024)) MiB after reading the delta (target < 64 MiB)"
printf '  stream to null: %.3f s, peak RSS %d MiB\n' "$stream_time" $(($(tail -1 time.out) / 1024))
rm -f "$shm/big.raw"

# 3. 4 GiB disk with 1 GiB of data; a tenth of its 64 KiB blocks changed since the base.
truncate -s 4G disk.raw
for slot in $(shuf -i 0-1023 -n 256 --random-source=<(yes)); do
  dd if=/dev/urandom of=disk.raw bs=4M count=1 seek="$slot" conv=notrunc status=none
done
make_bitmap small.b64 $((4 << 30)) 6553 2 disk.raw
cat disk.raw > /dev/null
delta=() full=()
for ((i = 0; i < RUNS; i++)); do
  t=$(now)
  "$QCOWFS" stream --source disk.raw --changed-blocks small.b64 --backing-name base.raw \
    --destination "$shm/delta.qcow2"
  delta+=("$(elapsed "$t")")
  rm -f "$shm/delta.qcow2" "$shm/full.qcow2"
  t=$(now); qemu-img convert -f raw -O qcow2 disk.raw "$shm/full.qcow2"; full+=("$(elapsed "$t")")
  rm -f "$shm/full.qcow2"
done
d=$(min "${delta[@]}") f=$(min "${full[@]}")
echo "4 GiB disk, 1 GiB of data, 6,553 changed blocks (a tenth), best of $RUNS runs:"
printf '  stream --changed-blocks to tmpfs       %6.3f s\n' "$d"
printf '  qemu-img convert of the disk to tmpfs  %6.3f s\n' "$f"
echo "  the delta vs a full convert: $(ratio "$f" "$d")x faster"
