#!/usr/bin/python3
"""An independent judge of VHD files: libvhdi (Debian's python3-libvhdi) reads a VHD chain.

Usage: vhd_judge.py TOP.vhd OUT.raw [SEARCHDIR...]

Opens TOP.vhd, follows differencing disks to their parents and writes the guest content
(media_size bytes) of TOP to OUT.raw. libvhdi names a parent only by the dynamic header's
parent unicode name (it ignores the parent locators), so a parent is looked for under that
name relative to the child's directory, then by its base name in each SEARCHDIR. The parent's
unique id must equal the child's parent unique id. Exits non-zero with a message on error.

libvhdi 20210425 misreads some reads that span blocks of a differencing chain (a child's
sectors then come from its parent), so no read here crosses a block boundary of any layer:
reads are as large as the greatest common divisor of the chain's block sizes (which libvhdi
does not tell: they are read from the dynamic headers). It also reads a sector bitmap byte
from its first set bit to its end from the layer (see vhd_writer_test.cc); that is libvhdi's
reading and this script leaves it be.

Run with /usr/bin/python3: a python3 earlier on PATH (pyenv) may not have pyvhdi.
"""

import math
import os
import struct
import sys

import pyvhdi

MAX_CHUNK = 4 << 20
MAX_DEPTH = 64


def block_size(path):
    """The block size in the dynamic header of a dynamic or differencing VHD."""
    with open(path, "rb") as f:
        f.seek(-512, os.SEEK_END)
        footer = f.read(512)
        (data_offset,) = struct.unpack(">Q", footer[16:24])
        f.seek(data_offset + 32)
        (size,) = struct.unpack(">I", f.read(4))
    return size


def find_parent(child_path, name, search_dirs):
    """The path of the parent a child at child_path names `name`, or None."""
    # Windows writers may store a path with backslashes or a drive letter.
    name = name.replace("\\", "/")
    if len(name) >= 2 and name[1] == ":":
        name = name[2:]
    candidates = [os.path.join(os.path.dirname(child_path), name)]
    candidates += [os.path.join(d, os.path.basename(name)) for d in search_dirs]
    for c in candidates:
        if os.path.isfile(c):
            return c
    return None


def open_chain(top, search_dirs):
    """Opens top and its ancestors; returns the opened files, top first, and the size of
    reads that cross no block boundary of any of them."""
    chain = []
    chunk = MAX_CHUNK
    path = top
    while True:
        f = pyvhdi.file()
        f.open(path)
        if f.disk_type != pyvhdi.disk_types.FIXED:
            chunk = math.gcd(chunk, block_size(path))
        if chain:
            child = chain[-1]
            if child.parent_identifier != f.identifier:
                raise RuntimeError(
                    "%s: unique id %s is not the parent id %s its child records"
                    % (path, f.identifier, child.parent_identifier))
            child.set_parent(f)
        chain.append(f)
        if f.disk_type != pyvhdi.disk_types.DIFFERENTIAL:
            return chain, chunk
        if len(chain) > MAX_DEPTH:
            raise RuntimeError("chain deeper than %d" % MAX_DEPTH)
        name = f.get_parent_filename()
        if not name:
            raise RuntimeError("%s: differencing disk without a parent name" % path)
        parent = find_parent(path, name, search_dirs)
        if parent is None:
            raise RuntimeError("%s: parent %r not found" % (path, name))
        path = parent


def main(argv):
    if len(argv) < 3:
        sys.stderr.write(__doc__)
        return 2
    top, out, search_dirs = argv[1], argv[2], argv[3:]
    try:
        chain, chunk = open_chain(top, search_dirs)
        f = chain[0]
        size = f.media_size
        with open(out, "wb") as o:
            offset = 0
            while offset < size:
                n = min(chunk, size - offset)
                data = f.read_buffer_at_offset(n, offset)
                if len(data) != n:
                    raise RuntimeError("short read at %d: %d of %d bytes" % (offset, len(data), n))
                o.write(data)
                offset += n
        for c in chain:  # children first: each still refers to its parent
            c.close()
    except (IOError, OSError, RuntimeError) as e:
        sys.stderr.write("vhd_judge: %s: %s\n" % (top, e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
