# Shared prologue of the benchmarks (sourced, not run): the qcowfs binary ($1, default
# build/cli/qcowfs), RUNS, a work directory on disk and one in tmpfs with a mountpoint,
# removed on exit (the mount unmounted first), and timing helpers.
QCOWFS=$(realpath "${1:-build/cli/qcowfs}")
RUNS=${RUNS:-3}
work=$(mktemp -d /var/tmp/qcowfs-bench.XXXXXX)
shm=$(mktemp -d /dev/shm/qcowfs-bench.XXXXXX)
mnt="$work/mnt"
mkdir -p "$mnt"

cleanup() {
  mountpoint -q "$mnt" && fusermount3 -u "$mnt"
  rm -rf --one-file-system "$work" "$shm"
}
trap cleanup EXIT

now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc -l; }
min() { printf '%s\n' "$@" | sort -g | head -1; }
ratio() { echo "scale=2; $1 / $2" | bc -l; }

# Mounts `--export $1` and sets mount_time (seconds until disk.qcow2 answers) and hwm (the
# daemon's peak RSS in KiB after reading the whole export), then unmounts.
measure_mount() {
  local t pid
  t=$(now)
  "$QCOWFS" mount --export "$1" "$mnt"
  stat "$mnt/disk.qcow2" > /dev/null
  mount_time=$(elapsed "$t")
  pid=$(pgrep -n -x qcowfs)
  cat "$mnt/disk.qcow2" > /dev/null
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  fusermount3 -u "$mnt"
}
