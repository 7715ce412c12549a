#!/usr/bin/env bash
# Installs and erases the packages build-packages.sh left in OUT, into empty test roots,
# with rpm and with dpkg, and checks what each step leaves:
#   - qcowfs and qcowfs-xapi install side by side; the xapi package's only file is
#     /etc/xapi.conf.d/qcowfs.conf, and xapi's own reading of its configuration
#     (xapi_conf.py) then gives qcow_to_stdout and qcow_stream_tool as qcowfs's programs,
#     installed and executable in the root, over what /etc/xapi.conf says;
#   - installing says the toolstack must restart, and restarts nothing;
#   - erasing qcowfs-xapi, even after the drop-in was edited by hand, leaves nothing in
#     /etc/xapi.conf.d (an .rpmsave or a kept conffile would still be read), so xapi is back
#     to /etc/xapi.conf's settings; it says so; qcowfs stays until erased itself.
# The roots hold a copy of /bin/sh and its libraries, for the packages' scriptlets.
#
#   packaging/check-install.sh OUT
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath "$1")
version=$(sed -n 's/^project(qcowfs VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
fail() { echo "check-install: FAIL: $*" >&2; exit 1; }
roots=()
cleanup() { for r in "${roots[@]}"; do rm -rf --one-file-system "$r"; done; }
trap cleanup EXIT

# A fresh root with /bin/sh (and what it links) and xapi's own /etc/xapi.conf.
new_root() {
  local r lib
  r=$(mktemp -d /tmp/qcowfs-pkgroot.XXXXXX)
  roots+=("$r")
  mkdir -p "$r/bin" "$r/etc/xapi.conf.d" "$r/tmp"
  cp -L /bin/sh "$r/bin/sh"
  for lib in $(ldd /bin/sh | grep -o '/[^ ]*'); do cp -L --parents "$lib" "$r"; done
  printf '%s\n' '# xapi defaults' 'qcow_to_stdout=/opt/xensource/libexec/qcow2-to-stdout.py' \
    'qcow_stream_tool=qcow-stream-tool' > "$r/etc/xapi.conf"
  echo "$r"
}

# What xapi reads for the two settings under root $1, one KEY=VALUE a line.
settings() { python3 packaging/xapi_conf.py "$1" qcow_to_stdout qcow_stream_tool; }

expect_qcowfs_settings() {
  local r=$1 got
  got=$(settings "$r")
  [ "$got" = "qcow_to_stdout=/usr/libexec/qcowfs/qcow2-to-stdout
qcow_stream_tool=/usr/bin/qcowfs" ] || fail "$2: xapi would read:
$got"
  [ -x "$r/usr/libexec/qcowfs/qcow2-to-stdout" ] && [ -x "$r/usr/bin/qcowfs" ] ||
    fail "$2: the programs the settings name are not there"
  [ "$("$r/usr/libexec/qcowfs/qcow2-to-stdout" --version)" = "qcow2-to-stdout (qcowfs) $version" ] ||
    fail "$2: qcow_to_stdout does not run"
  if grep -q $'\r' "$r/etc/xapi.conf.d/qcowfs.conf"; then fail "$2: CR in the drop-in"; fi
}

expect_xapi_defaults() {
  # (dpkg takes the directory with the package when nothing else holds it: xapi reads a
  # missing one as empty.)
  if [ -d "$1/etc/xapi.conf.d" ] && [ -n "$(ls -A "$1/etc/xapi.conf.d")" ]; then
    fail "$2: left in xapi.conf.d: $(ls -A "$1/etc/xapi.conf.d")"
  fi
  [ "$(settings "$1")" = "qcow_to_stdout=/opt/xensource/libexec/qcow2-to-stdout.py
qcow_stream_tool=qcow-stream-tool" ] || fail "$2: xapi would not read its own settings"
}

# RPM.
rpm_main="$out/qcowfs-$version-1.x86_64.rpm"
rpm_xapi="$out/qcowfs-xapi-$version-1.noarch.rpm"
[ -f "$rpm_main" ] && [ -f "$rpm_xapi" ] || fail "the RPMs are not in $out"
[ "$(rpm -qlp "$rpm_xapi" 2>/dev/null)" = /etc/xapi.conf.d/qcowfs.conf ] || fail "qcowfs-xapi RPM files"
rpm -qp --requires "$rpm_xapi" 2>/dev/null | grep -qx "qcowfs = $version-1" ||
  fail "qcowfs-xapi does not require qcowfs $version-1"
rpm -qp --changelog "$rpm_main" 2>/dev/null | grep -q . || fail "no %changelog"
r=$(new_root)
rpm --root "$r" --initdb
said=$(rpm --force-debian --root "$r" -i --nodeps "$rpm_main" "$rpm_xapi" 2>&1) || fail "rpm -i: $said"
grep -q "restart the toolstack (xe-toolstack-restart)" <<<"$said" || fail "rpm -i said: $said"
expect_qcowfs_settings "$r" "rpm -i"
echo "# edited by hand" >> "$r/etc/xapi.conf.d/qcowfs.conf"
said=$(rpm --force-debian --root "$r" -e qcowfs-xapi 2>&1) || fail "rpm -e qcowfs-xapi: $said"
grep -q "removed; restart the toolstack" <<<"$said" || fail "rpm -e said: $said"
expect_xapi_defaults "$r" "rpm -e qcowfs-xapi"
[ -x "$r/usr/bin/qcowfs" ] || fail "rpm -e qcowfs-xapi took qcowfs"
rpm --force-debian --root "$r" -e qcowfs || fail "rpm -e qcowfs"
[ ! -e "$r/usr/bin/qcowfs" ] && [ ! -e "$r/usr/libexec/qcowfs" ] || fail "rpm -e qcowfs left files"

# Debian packages.
deb_main=$(find "$out" -maxdepth 1 -name "qcowfs_${version}_*.deb" | head -1)
deb_xapi="$out/qcowfs-xapi_${version}_all.deb"
[ -f "$deb_main" ] && [ -f "$deb_xapi" ] || fail "the Debian packages are not in $out"
got=$(dpkg-deb -c "$deb_xapi" | awk '$1 !~ /^d/ {print $6}')
[ "$got" = ./etc/xapi.conf.d/qcowfs.conf ] || fail "qcowfs-xapi Debian package files: $got"
if dpkg-deb --ctrl-tarfile "$deb_xapi" | tar -t | grep -q conffiles; then
  fail "qcowfs-xapi.deb has conffiles: dpkg -r would keep the drop-in"
fi
[ "$(dpkg-deb -f "$deb_xapi" Depends)" = "qcowfs (= $(dpkg-deb -f "$deb_main" Version))" ] ||
  fail "qcowfs-xapi.deb Depends: $(dpkg-deb -f "$deb_xapi" Depends)"
r=$(new_root)
mkdir -p "$r/var/lib/dpkg/info" "$r/var/lib/dpkg/updates"
touch "$r/var/lib/dpkg/status" "$r/var/lib/dpkg/available"
dpkg=(dpkg --root="$r" --force-script-chrootless --force-not-root --log=/dev/null)
said=$("${dpkg[@]}" -i "$deb_main" "$deb_xapi" 2>&1) || fail "dpkg -i: $said"
grep -q "restart the toolstack (xe-toolstack-restart)" <<<"$said" || fail "dpkg -i said: $said"
expect_qcowfs_settings "$r" "dpkg -i"
echo "# edited by hand" >> "$r/etc/xapi.conf.d/qcowfs.conf"
said=$("${dpkg[@]}" -r qcowfs-xapi 2>&1) || fail "dpkg -r qcowfs-xapi: $said"
grep -q "removed; restart the toolstack" <<<"$said" || fail "dpkg -r said: $said"
expect_xapi_defaults "$r" "dpkg -r qcowfs-xapi"
[ -x "$r/usr/bin/qcowfs" ] || fail "dpkg -r qcowfs-xapi took qcowfs"
"${dpkg[@]}" -r qcowfs > /dev/null 2>&1 || fail "dpkg -r qcowfs"
[ ! -e "$r/usr/bin/qcowfs" ] || fail "dpkg -r qcowfs left the binary"
echo "check-install: qcowfs and qcowfs-xapi install and erase cleanly with rpm and dpkg"
