#!/usr/bin/env bash
# The speed table (not a test): every path qcowfs moves data on, each against the tool a
# user compares it with, measured in this run, best of RUNS, with peak RSS. Rows:
#
#   import  serve of a plain image from a file, and cat into MNT/import.qcow2, vs durable
#           qemu-img convert -n -t writeback (time ratio: lower is better), and vs the
#           disk's own durable write of the same bytes (dd bs=1M conv=fsync);
#           the same for a deflate-compressed image;
#   export  cat MNT/disk.qcow2 on a fresh mount vs cat of the same bytes from the page cache
#           (rate, percent), and vs qemu-img convert -O qcow2 to tmpfs (times faster);
#           stream | cat vs the same, and vs qcow2-to-stdout.py where it is installed;
#           a dynamic VHD and a 3-layer qcow2 chain through the mount vs qemu-img convert.
#
# The disk: 4 GiB with 1 GiB of data in 1 MiB pieces at random places (random bytes; text
# for the compressed image). Each row is measured with the commands pinned to 1 core, then
# to all of them (taskset), or to each count in CORES ("1 2 4").
#
# RUNS rounds run every command once, in turn, so that the two sides of each ratio are
# measured at the same time (this VM's disk and page reclaim drift over minutes); each row
# keeps the best of its rounds. RUNS below 2 misleads: here the first run of a kind (a
# mount's cat, a convert to tmpfs) took up to 6 times longer, while the kernel reclaimed
# memory for the new file's pages.
#
# Usage: bench/speed_table.sh [path/to/qcowfs]   (as root; qemu-img, fuse3, python3)
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

all=$(nproc)
CORES=${CORES:-"1 $all"}
cpus=0

# Writes 1024 pieces of 1 MiB at distinct random MiB slots of a 4 GiB file $1: random
# bytes, or base64 text with $2 = text. Also writes the pieces, in order, to $1.data.
make_disk() {
  python3 - "$1" "${2:-random}" <<'EOF'
import base64, os, random, sys
path, kind = sys.argv[1], sys.argv[2]
rng = random.Random(19)
with open(path, "wb") as disk, open(path + ".data", "wb") as data:
    disk.truncate(4 << 30)
    for slot in sorted(rng.sample(range(4096), 1024)):
        piece = os.urandom(1 << 20) if kind == "random" else \
            base64.b64encode(os.urandom(3 << 18))
        os.pwrite(disk.fileno(), piece, slot << 20)
        data.write(piece)
EOF
}

# Prints the peak RSS in KiB of the newest qcowfs process (a mount's daemon).
daemon_hwm() { awk '/VmHWM/ {print $2}' "/proc/$(pgrep -n -x qcowfs)/status"; }

# Runs "$@" pinned to the cores of this round; sets took (seconds) and rss (KiB, peak of
# the command and its children).
run() {
  local t out="$work/time.out"
  t=$(now)
  /usr/bin/time -o "$out" -f %M taskset -c "$cpus" "$@"
  took=$(elapsed "$t")
  rss=$(tail -1 "$out")
}

# keep NAME TIME RSS: best_NAME becomes the lower of itself and TIME, rss_NAME the higher of
# itself and RSS (both unset at the start of a round).
keep() {
  local b="best_$1" r="rss_$1"
  if [[ -z ${!b:-} ]] || (($(echo "$2 < ${!b}" | bc -l))); then printf -v "$b" '%s' "$2"; fi
  if [[ -z ${!r:-} ]] || (($3 > ${!r})); then printf -v "$r" '%s' "$3"; fi
}

# once NAME SETUP COMMAND...: one run of COMMAND after SETUP (not timed), kept by keep.
once() {
  local name=$1 setup=$2
  shift 2
  eval "$setup"
  run "$@"
  keep "$name" "$took" "$rss"
}

# The same for commands that a mount serves; the daemon's peak RSS is kept. MOUNT_ARGS
# mount fresh before the run; the command runs; then the mount ends.
once_mounted() {
  local name=$1 mount_args=$2 setup=$3 h
  shift 3
  eval "$setup"
  # shellcheck disable=SC2086
  taskset -c "$cpus" "$QCOWFS" mount $mount_args "$mnt"
  run "$@"
  h=$(daemon_hwm)
  if [[ -f $mnt/import.status ]]; then
    grep -q "state: done" "$mnt/import.status" || { echo "import failed" >&2; exit 1; }
  fi
  fusermount3 -u "$mnt"
  keep "$name" "$took" "$h"
}

echo "making the images (4 GiB disk, 1 GiB of data in 1 MiB pieces)..." >&2
make_disk "$work/disk.raw"
make_disk "$work/text.raw" text
qemu-img convert -f raw -O qcow2 "$work/disk.raw" "$work/plain.qcow2"
qemu-img convert -c -f raw -O qcow2 "$work/text.raw" "$work/compressed.qcow2"
qemu-img convert -f raw -O vpc "$work/disk.raw" "$work/disk.vhd"
# A 3-layer chain holding the disk's data: a third of the pieces in each layer.
qemu-img create -q -f qcow2 "$work/base.qcow2" 4G
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$work/mid.qcow2"
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 "$work/top.qcow2"
python3 - "$work" <<'EOF'
import random, subprocess, sys
work = sys.argv[1]
rng = random.Random(19)
slots = sorted(rng.sample(range(4096), 1024))
for n, layer in enumerate(["base", "mid", "top"]):
    cmds = "".join("write -P %d %d 1M\n" % (1 + s % 250, s << 20) for s in slots[n::3])
    subprocess.run(["qemu-io", "%s/%s.qcow2" % (work, layer)], input=cmds.encode(),
                   stdout=subprocess.DEVNULL, check=True)
EOF
rm -f "$work/text.raw" "$work/text.raw.data"
script=$(command -v qcow2-to-stdout.py || true)

fresh_target() { rm -f "$work/target"; truncate -s 4G "$work/target"; sync; }
warm() { cat "$@" > /dev/null; }
sync
warm "$work/plain.qcow2" "$work/compressed.qcow2" "$work/disk.raw" "$work/disk.raw.data" \
  "$work/disk.vhd" "$work/base.qcow2" "$work/mid.qcow2" "$work/top.qcow2"

# One run each of: $work/NAME.qcow2 imported with serve (checked by qemu-img compare),
# through the mount, and with durable qemu-img convert (best_serve_NAME, best_mount_NAME,
# best_qemu_NAME). The rounds alternate the tools, so that each ratio compares runs made
# at the same time: this VM's disk and page reclaim drift over minutes.
measure_import() {
  local name=$1 image="$work/$1.qcow2"
  once "serve_$name" fresh_target "$QCOWFS" serve --source "$image" --destination "$work/target"
  qemu-img compare -q -f qcow2 -F raw "$image" "$work/target"
  once_mounted "mount_$name" "--import $work/target" fresh_target \
    sh -c "cat '$image' > '$mnt/import.qcow2'"
  once "qemu_$name" fresh_target qemu-img convert -n -t writeback -f qcow2 -O raw "$image" \
    "$work/target"
}

# One run each of: SOURCE (of FORMAT) exported with cat of a fresh mount's disk.qcow2, and
# with qemu-img convert -O qcow2 to tmpfs (best_fuse_NAME, best_convert_NAME).
measure_export() {
  local name=$1 source=$2 format=$3
  once_mounted "fuse_$name" "--export $source" : sh -c "cat '$mnt/disk.qcow2' > /dev/null"
  once "convert_$name" 'rm -f "$shm/out.qcow2"' qemu-img convert -f "$format" -O qcow2 \
    "$source" "$shm/out.qcow2"
}

# row LABEL OURS REFERENCE KIND FLOOR GOAL RSS: KIND "time" prints OURS/REFERENCE (lower is
# better), "speed" REFERENCE/OURS (times faster), "rate" REFERENCE/OURS in percent.
row() {
  local label=$1 ours=$2 ref=$3 kind=$4 floor=$5 goal=$6 rss=$7 value
  case $kind in
    time) value=$(printf '%.2f' "$(echo "$ours / $ref" | bc -l)") ;;
    speed) value=$(printf '%.2fx' "$(echo "$ref / $ours" | bc -l)") ;;
    rate) value=$(printf '%.0f%%' "$(echo "100 * $ref / $ours" | bc -l)") ;;
  esac
  printf '| %s | %.3f s | %.3f s | %s | %s | %s | %d MiB |\n' "$label" "$ours" "$ref" \
    "$value" "$floor" "$goal" $((rss / 1024))
}

for count in $CORES; do
  ((count > all)) && continue
  cpus="0-$((count - 1))"
  echo "measuring on $count core(s)..." >&2

  for name in serve_plain mount_plain qemu_plain dd_plain serve_compressed mount_compressed \
    qemu_compressed fuse_raw convert_raw pagecache stream script fuse_vhd convert_vhd \
    fuse_chain convert_chain; do
    unset "best_$name" "rss_$name"
  done
  "$QCOWFS" mount --export "$work/disk.raw" "$mnt"
  size=$(stat -c %s "$mnt/disk.qcow2")
  fusermount3 -u "$mnt"
  for ((round = 0; round < RUNS; round++)); do
    # Import.
    measure_import plain
    once dd_plain fresh_target dd if="$work/disk.raw.data" of="$work/target" bs=1M \
      conv=fsync status=none
    measure_import compressed
    rm -f "$work/target"

    # Export.
    measure_export raw "$work/disk.raw" raw
    once pagecache : dd if="$work/disk.raw" of=/dev/null bs=128K count="$size" \
      iflag=count_bytes status=none
    once stream : sh -c "'$QCOWFS' stream --source '$work/disk.raw' --destination - | cat > /dev/null"
    if [[ -n $script ]]; then
      once script : sh -c "'$script' '$work/disk.raw' | cat > /dev/null"
    fi
    measure_export vhd "$work/disk.vhd" vpc
    measure_export chain "$work/top.qcow2" qcow2
  done
  rm -f "$shm/out.qcow2"

  echo
  echo "On $count of $all cores (taskset -c $cpus), best of $RUNS:"
  echo
  echo '| path | qcowfs | reference | ratio | floor | goal | qcowfs peak RSS |'
  echo '|---|---|---|---|---|---|---|'
  row 'serve plain image vs durable qemu-img convert (time)' "$best_serve_plain" \
    "$best_qemu_plain" time '<= 1.0' '<= 0.9' "$rss_serve_plain"
  row '  the same through the mount' "$best_mount_plain" "$best_qemu_plain" time '<= 1.0' \
    '<= 0.9' "$rss_mount_plain"
  row 'serve plain image vs dd bs=1M conv=fsync (time)' "$best_serve_plain" "$best_dd_plain" \
    time '<= 1.2' '<= 1.1' "$rss_serve_plain"
  row 'serve compressed image vs durable qemu-img convert (time)' "$best_serve_compressed" \
    "$best_qemu_compressed" time '<= 0.8' '<= 0.6' "$rss_serve_compressed"
  row '  the same through the mount' "$best_mount_compressed" "$best_qemu_compressed" time \
    '<= 0.8' '<= 0.6' "$rss_mount_compressed"
  row 'cat MNT/disk.qcow2 vs cat from page cache (rate)' "$best_fuse_raw" "$best_pagecache" \
    rate '>= 55%' '>= 70%' "$rss_fuse_raw"
  row 'cat MNT/disk.qcow2 vs qemu-img convert -O qcow2 to tmpfs' "$best_fuse_raw" \
    "$best_convert_raw" speed '>= 2.3x' '>= 2.5x' "$rss_fuse_raw"
  row 'stream \| cat vs qemu-img convert -O qcow2 to tmpfs' "$best_stream" "$best_convert_raw" \
    speed '>= 3x' '>= 4x' "$rss_stream"
  if [[ -n $script ]]; then
    row 'stream \| cat vs qcow2-to-stdout.py' "$best_stream" "$best_script" speed '>= 6x' \
      '>= 8x' "$rss_stream"
  else
    echo '| stream \| cat vs qcow2-to-stdout.py | | not installed | | >= 6x | >= 8x | |'
  fi
  row 'dynamic VHD through the mount vs qemu-img convert -f vpc' "$best_fuse_vhd" \
    "$best_convert_vhd" speed '>= 2x' '>= 2.5x' "$rss_fuse_vhd"
  row '3-layer qcow2 chain through the mount vs qemu-img convert' "$best_fuse_chain" \
    "$best_convert_chain" speed '>= 2.5x' '>= 3x' "$rss_fuse_chain"
done
