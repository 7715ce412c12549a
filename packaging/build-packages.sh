#!/usr/bin/env bash
# Builds qcowfs's packages into OUT and checks them:
#   - the RPM, with rpmbuild from packaging/rpm/qcowfs.spec over a tarball of the source tree
#     (the spec builds the static binary, -DQCOWFS_STATIC=ON);
#   - the Debian package, with CPack from that same static build tree.
# Each must hold exactly bin/qcowfs, libexec/qcowfs/qcow2-to-stdout (a link to it) and the
# man page under /usr, and its binary must run from the unpacked package under both names.
# The unpacked packages stay in OUT/unpacked/{rpm,deb} (tests/static/chroot_test.sh takes
# the RPM's binary). qcowfs-xapi (RPM subpackage, and a Debian package made here) holds the
# drop-in that points xapi at qcowfs; check-install.sh installs and erases both packages in
# test roots.
#
#   packaging/build-packages.sh OUT
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "$1")
version=$(sed -n 's/^project(qcowfs VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
[ -n "$version" ] || { echo "build-packages: no version in CMakeLists.txt" >&2; exit 1; }
fail() { echo "build-packages: FAIL: $*" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$out/rpmbuild/SOURCES" "$out/unpacked"

# The source tarball: the files git knows of (tracked, or new and not ignored), else the
# tree without build directories.
tarball="$out/rpmbuild/SOURCES/qcowfs-$version.tar.gz"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -co --exclude-standard -z | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
    tar --null -T - --transform "s,^,qcowfs-$version/," -czf "$tarball"
else
  tar --exclude='./build*' --transform "s,^\.,qcowfs-$version," -czf "$tarball" .
fi

echo "build-packages: rpmbuild (static binary)" >&2
rpmbuild -bb --noclean --nodeps --quiet --define "_topdir $out/rpmbuild" \
  --define "qcowfs_version $version" packaging/rpm/qcowfs.spec >"$out/rpmbuild.log" 2>&1 ||
  { tail -30 "$out/rpmbuild.log" >&2; fail "rpmbuild"; }
rpm_file=$(find "$out/rpmbuild/RPMS" -name "qcowfs-$version-*.rpm" | head -1)
[ -n "$rpm_file" ] || fail "no RPM built"
rpm_xapi=$(find "$out/rpmbuild/RPMS" -name "qcowfs-xapi-$version-*.rpm" | head -1)
[ -n "$rpm_xapi" ] || fail "no qcowfs-xapi RPM built"
cp "$rpm_file" "$rpm_xapi" "$out/"

echo "build-packages: cpack -G DEB" >&2
static_build="$out/rpmbuild/BUILD/qcowfs-$version/build-rpm"
[ -f "$static_build/CPackConfig.cmake" ] || fail "rpmbuild left no build tree in $static_build"
(cd "$static_build" && cpack -G DEB -B "$out/deb" >"$out/cpack.log" 2>&1) ||
  { tail -30 "$out/cpack.log" >&2; fail "cpack"; }
deb_file=$(find "$out/deb" -maxdepth 1 -name "qcowfs_${version}_*.deb" | head -1)
[ -n "$deb_file" ] || fail "no Debian package built"
cp "$deb_file" "$out/"

# qcowfs-xapi as a Debian package too: the drop-in alone, not a conffile (dpkg -r would keep
# a conffile, and xapi would go on reading it), depending on this very qcowfs.
echo "build-packages: dpkg-deb qcowfs-xapi" >&2
xapi_tree="$out/deb/qcowfs-xapi"
install -D -m 0644 packaging/xapi/qcowfs.conf "$xapi_tree/etc/xapi.conf.d/qcowfs.conf"
mkdir -p "$xapi_tree/DEBIAN"
cat > "$xapi_tree/DEBIAN/control" <<CONTROL
Package: qcowfs-xapi
Version: $(dpkg-deb -f "$deb_file" Version)
Architecture: all
Maintainer: $(dpkg-deb -f "$deb_file" Maintainer)
Depends: qcowfs (= $(dpkg-deb -f "$deb_file" Version))
Section: admin
Priority: optional
Description: Make xapi export and import qcow2 VDIs with qcowfs
 Installs /etc/xapi.conf.d/qcowfs.conf, which points xapi's qcow_to_stdout and
 qcow_stream_tool settings at qcowfs. xapi reads it when the toolstack starts:
 restart it (xe-toolstack-restart) after installing this package, and again
 after removing it to go back to xapi's own tools. The package never restarts
 the toolstack itself.
CONTROL
printf '%s\n' '#!/bin/sh' 'set -e' 'if [ "$1" = configure ]; then' \
  '  echo "qcowfs-xapi: restart the toolstack (xe-toolstack-restart) for xapi to use qcowfs"' \
  'fi' > "$xapi_tree/DEBIAN/postinst"
printf '%s\n' '#!/bin/sh' 'set -e' 'if [ "$1" = remove ]; then' \
  '  echo "qcowfs-xapi: removed; restart the toolstack (xe-toolstack-restart) for xapi to use its own qcow2 tools again"' \
  'fi' > "$xapi_tree/DEBIAN/postrm"
chmod 0755 "$xapi_tree/DEBIAN/postinst" "$xapi_tree/DEBIAN/postrm"
dpkg-deb --root-owner-group --build "$xapi_tree" "$out/qcowfs-xapi_${version}_all.deb" >/dev/null ||
  fail "dpkg-deb qcowfs-xapi"

# File lists: exactly the layout, the link relative.
expected_rpm="/usr/bin/qcowfs
/usr/libexec/qcowfs
/usr/libexec/qcowfs/qcow2-to-stdout
/usr/share/man/man1/qcowfs.1.gz"
got=$(rpm -qlp "$rpm_file" 2>/dev/null | sort)
[ "$got" = "$expected_rpm" ] || fail "RPM files:
$got"
expected_deb="./usr/bin/qcowfs
./usr/libexec/qcowfs/qcow2-to-stdout -> ../../bin/qcowfs
./usr/share/man/man1/qcowfs.1"
got=$(dpkg-deb -c "$deb_file" | awk '$1 !~ /^d/ {print $6, $7, $8}' | sed 's/ *$//' | sort)
[ "$got" = "$expected_deb" ] || fail "Debian package files:
$got"

# The unpacked binaries: static, and answering under both names.
mkdir -p "$out/unpacked/rpm" "$out/unpacked/deb"
(cd "$out/unpacked/rpm" && rpm2cpio "$rpm_file" | cpio -idm --quiet)
dpkg-deb -x "$deb_file" "$out/unpacked/deb"
for root in "$out/unpacked/rpm" "$out/unpacked/deb"; do
  file -L "$root/usr/bin/qcowfs" | grep -q "statically linked" || fail "$root: not static"
  [ "$(readlink "$root/usr/libexec/qcowfs/qcow2-to-stdout")" = ../../bin/qcowfs ] ||
    fail "$root: the link"
  [ "$("$root/usr/bin/qcowfs" --version)" = "qcowfs $version" ] || fail "$root: qcowfs --version"
  [ "$("$root/usr/libexec/qcowfs/qcow2-to-stdout" --version)" = "qcow2-to-stdout (qcowfs) $version" ] ||
    fail "$root: qcow2-to-stdout --version"
done
echo "build-packages: $(basename "$rpm_file") and $(basename "$deb_file") in $out: file lists and binaries good"
packaging/check-install.sh "$out"
