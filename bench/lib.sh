# Shared prologue of the benchmarks (sourced, not run): the qcowfs binary ($1, default
# build/cli/qcowfs), RUNS, a work directory on disk and one in tmpfs with a mountpoint,
# removed on exit (the mount unmounted first), and timing helpers.
QCOWFS=$(realpath "${1:-build/cli/qcowfs}")
RUNS=${RUNS:-3}
work=$(mktemp -d /var/tmp/qcowfs-bench.XXXXXX)
shm=$(mktemp -d /dev/shm/qcowfs-bench.XXXXXX)
mnt="$work/mnt"
mkdir -p "$mnt"

# A guest kernel with virtio-balloon free page reporting hands freed memory back to its host,
# and the next page-cache pages then cost a host fault each: on the development VM a fresh
# mount's `cat` took 0.15 s or 0.84 s for the same 1 GiB, by whether the memory it got had
# been reported. XCP-ng's dom0 reports nothing, so the benchmarks hold reporting off while
# they run (the orders above the largest are never reported) and put it back on exit.
# KEEP_PAGE_REPORTING=1 leaves it alone.
reporting=/sys/module/page_reporting/parameters/page_reporting_order
reporting_was=
if [[ -z ${KEEP_PAGE_REPORTING:-} && -w $reporting ]]; then
  reporting_was=$(cat "$reporting")
  if (echo 11 > "$reporting") 2> /dev/null; then
    echo "(free page reporting held off while this runs: $reporting was $reporting_was)" >&2
  else
    reporting_was=
  fi
fi

cleanup() {
  mountpoint -q "$mnt" && fusermount3 -u "$mnt"
  rm -rf --one-file-system "$work" "$shm"
  if [[ -n $reporting_was ]]; then echo "$reporting_was" > "$reporting"; fi
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
