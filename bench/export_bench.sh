#!/usr/bin/env bash
# Export benchmark (not a test): FUSE export vs qemu-img convert vs the page cache, all
# measured in this run, plus mount time and peak RSS for an 8 TiB sparse source.
#
# Usage: bench/export_bench.sh [path/to/qcowfs]     (run as root; needs qemu-img, fuse3)
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

# 4 GiB sparse source with 1 GiB of random data in 256 pieces of 4 MiB at random slots.
src="$work/src.raw"
truncate -s 4G "$src"
for slot in $(shuf -i 0-1023 -n 256 --random-source=<(yes)); do
  dd if=/dev/urandom of="$src" bs=4M count=1 seek="$slot" conv=notrunc status=none
done
cat "$src" > /dev/null  # warm the page cache: every timing below reads the source from it

pagecache=() fuse=() convert=() size=0
for ((i = 0; i < RUNS; i++)); do
  "$QCOWFS" mount --export "$src" "$mnt"
  size=$(stat -c %s "$mnt/disk.qcow2")
  t=$(now); cat "$mnt/disk.qcow2" > /dev/null; fuse+=("$(elapsed "$t")")
  fusermount3 -u "$mnt"

  t=$(now); dd if="$src" of=/dev/null bs=128K count="$size" iflag=count_bytes status=none
  pagecache+=("$(elapsed "$t")")

  rm -f "$shm/out.qcow2"
  t=$(now); qemu-img convert -f raw -O qcow2 "$src" "$shm/out.qcow2"; convert+=("$(elapsed "$t")")
done
f=$(min "${fuse[@]}") p=$(min "${pagecache[@]}") c=$(min "${convert[@]}")
echo "4 GiB sparse source, 1 GiB data, image $((size >> 20)) MiB, best of $RUNS runs:"
printf '  cat MNT/disk.qcow2 (fresh mount)     %6.3f s  %7.0f MiB/s\n' "$f" "$(echo "$size / 1048576 / $f" | bc -l)"
printf '  qemu-img convert -O qcow2 to tmpfs   %6.3f s\n' "$c"
printf '  same bytes of source from page cache %6.3f s  %7.0f MiB/s\n' "$p" "$(echo "$size / 1048576 / $p" | bc -l)"
echo "  export vs qemu-img convert: $(ratio "$c" "$f")x faster (target >= 1.5x)"
echo "  export rate vs page cache:  $(ratio "$p * 100" "$f")% (target >= 35%)"

# 8 TiB sparse source with 64 scattered MiB of data: mount time and the daemon's peak RSS.
big="$work/big.raw"
truncate -s 8T "$big"
for ((i = 0; i < 64; i++)); do
  dd if=/dev/urandom of="$big" bs=1M count=1 seek=$((i * 131071 + 7)) conv=notrunc status=none
done
t=$(now); "$QCOWFS" mount --export "$big" "$mnt"; stat "$mnt/disk.qcow2" > /dev/null
mount_time=$(elapsed "$t")
pid=$(pgrep -n -x qcowfs)
cat "$mnt/disk.qcow2" > /dev/null
qemu-img check "$mnt/disk.qcow2" > /dev/null
qemu-img compare -f raw -F qcow2 "$big" "$mnt/disk.qcow2" > /dev/null
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
fusermount3 -u "$mnt"
echo "8 TiB sparse source, 64 MiB data:"
printf '  mount usable after %.3f s (target < 1 s)\n' "$mount_time"
echo "  daemon peak RSS after cat, qemu-img check and compare: $((hwm / 1024)) MiB ($hwm KiB; target < 32 MiB)"
