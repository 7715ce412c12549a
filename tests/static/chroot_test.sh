#!/usr/bin/env bash
# The static qcowfs (cmake -DQCOWFS_STATIC=ON) in an empty root: a directory holding nothing
# but the binary and the test disks, as a host with another userland (XCP-ng 8.3's glibc
# 2.17) would give it nothing it can use. It must answer --version, export with stream,
# import with serve (from a file and over TCP on loopback), refuse a host name it cannot
# look up with one clear line, and serve a FUSE mount (with /dev/fuse bind-mounted in),
# each judged by qemu-img outside the root.
#
#   tests/static/chroot_test.sh BUILD-STATIC/cli/qcowfs VERSION
set -euo pipefail
bin=$1 version=$2
root=$(mktemp -d /tmp/qcowfs-static.XXXXXX)
fail() { echo "chroot_test: FAIL: $*" >&2; exit 1; }
cleanup() {
  if mountpoint -q "$root/mnt" 2>/dev/null; then
    fusermount3 -u "$root/mnt" 2>/dev/null || umount -l "$root/mnt" || true
  fi
  if mountpoint -q "$root/dev/fuse" 2>/dev/null || grep -q " $root/dev/fuse " /proc/mounts; then
    umount "$root/dev/fuse" || true
  fi
  rm -rf "$root"
}
trap cleanup EXIT
in_root() { timeout 60 chroot "$root" /qcowfs "$@"; }

file "$bin" | grep -q "statically linked" || fail "$bin is not statically linked"
cp "$bin" "$root/qcowfs"
qemu-img create -q -f qcow2 "$root/base.qcow2" 64M
qemu-io -f qcow2 -c 'write -P 7 0 3M' -c 'write -P 8 40M 1M' "$root/base.qcow2" >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$root/top.qcow2"
qemu-io -f qcow2 -c 'write -P 9 1M 64k' -c 'write -z 40M 64k' "$root/top.qcow2" >/dev/null
qemu-img convert -O raw "$root/top.qcow2" "$root/disk.raw"
# Nothing else: no /lib, no /etc, no /dev, no /proc.
[ "$(ls "$root" | tr '\n' ' ')" = "base.qcow2 disk.raw qcowfs top.qcow2 " ] || fail "root not empty"

[ "$(in_root --version)" = "qcowfs $version" ] || fail "--version: $(in_root --version 2>&1)"

in_root stream --source /disk.raw --destination /out.qcow2 || fail "stream of a raw disk"
qemu-img check -q "$root/out.qcow2" || fail "qemu-img check of the export"
qemu-img compare -q "$root/disk.raw" "$root/out.qcow2" || fail "export differs from the disk"
in_root stream --source /top.qcow2 --destination /chain.qcow2 || fail "stream of a chain"
qemu-img compare -q "$root/top.qcow2" "$root/chain.qcow2" || fail "chain export differs"

truncate -s 64M "$root/target.raw"
in_root serve --source /out.qcow2 --destination /target.raw || fail "serve from a file"
cmp -s "$root/disk.raw" "$root/target.raw" || fail "import differs from the disk"

# TCP on loopback, numeric addresses: serve listens, stream connects.
port=$((20000 + RANDOM % 20000))
rm -f "$root/target.raw" && truncate -s 64M "$root/target.raw"
in_root serve --source "tcp:127.0.0.1:$port" --destination /target.raw &
server=$!
sent=
for _ in $(seq 100); do
  if in_root stream --source /disk.raw --destination "tcp:127.0.0.1:$port" 2>/dev/null; then
    sent=1
    break
  fi
  sleep 0.1
done
wait "$server" || fail "serve over TCP"
[ -n "$sent" ] || fail "stream over TCP never connected"
cmp -s "$root/disk.raw" "$root/target.raw" || fail "TCP import differs from the disk"

# A host name: one line naming the remedy, exit 2.
set +e
msg=$(in_root stream --source /disk.raw --destination tcp:localhost:$port 2>&1)
rc=$?
set -e
[ "$rc" = 2 ] || fail "a host name: exit $rc ($msg)"
[ "$(printf '%s\n' "$msg" | wc -l)" = 1 ] || fail "a host name: not one line: $msg"
case "$msg" in *"numeric address"*) ;; *) fail "a host name: $msg" ;; esac

# A mount, with /dev/fuse bind-mounted into the root: the daemon serves the export.
mkdir "$root/mnt" "$root/dev"
touch "$root/dev/fuse"
mount --bind /dev/fuse "$root/dev/fuse"
in_root mount --export /top.qcow2 /mnt || fail "mount"
mountpoint -q "$root/mnt" || fail "mount returned but nothing is mounted"
timeout 60 qemu-img compare -q "$root/top.qcow2" "$root/mnt/disk.qcow2" || fail "mounted export differs"
timeout 60 qemu-img check -q "$root/mnt/disk.qcow2" || fail "qemu-img check of the mounted export"
fusermount3 -u "$root/mnt" || fail "unmount"
echo "chroot_test: static qcowfs $version: --version, stream, serve (file, TCP), host name refused, mount: all good"
