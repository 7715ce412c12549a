#!/usr/bin/python3
"""Seeds for the VHD fuzz target: small fixed, dynamic and differencing VHDs with 4 KiB
blocks (qemu-img writes only 2 MiB ones), partial sector bitmaps and each locator kind,
written from the VHD specification. Usage: make_vhd_seeds.py DIR."""

import os
import struct
import sys
import uuid


def checksum(b):
    return ~sum(b) & 0xFFFFFFFF


def footer(size, disk_type, data_offset, uid):
    f = bytearray(512)
    struct.pack_into(">8sIIQI4sI4sQQHBBII16sB", f, 0, b"conectix", 2, 0x10000, data_offset,
                     0, b"tap\0", 0x10003, b"Wi2k", size, size, 1024, 16, 63, disk_type, 0,
                     uid, 0)
    struct.pack_into(">I", f, 64, checksum(f))
    return bytes(f)


def vhd(size, disk_type, writes, block=4096, parent=None, locators=()):
    """writes: (sector, count) runs; every written sector holds its own number."""
    uid = uuid.uuid4().bytes
    entries = (size + block - 1) // block
    spb = block // 512
    bitmap_bytes = ((spb + 7) // 8 + 511) // 512 * 512
    bat_off = 512 + 1024
    bat_bytes = (entries * 4 + 511) // 512 * 512
    loc_off = bat_off + bat_bytes
    loc_data = []
    for code, text in locators:
        data = text.encode("utf-8") if code == b"MacX" else text.encode("utf-16-le")
        loc_data.append((code, data, loc_off))
        loc_off += 512
    blocks = {}
    for sector, count in writes:
        for s in range(sector, sector + count):
            blk, k = divmod(s, spb)
            bm, data = blocks.setdefault(blk, (bytearray(bitmap_bytes), bytearray(block)))
            bm[k // 8] |= 0x80 >> (k % 8)
            data[k * 512:(k + 1) * 512] = struct.pack(">I", s) * 128
    bat = bytearray(b"\xff" * bat_bytes)
    body = bytearray()
    pos = loc_off
    for blk in sorted(blocks, reverse=True):  # not in guest order
        struct.pack_into(">I", bat, blk * 4, pos // 512)
        body += blocks[blk][0] + blocks[blk][1]
        pos += bitmap_bytes + block
    h = bytearray(1024)
    struct.pack_into(">8sQQIII", h, 0, b"cxsparse", 0xFFFFFFFFFFFFFFFF, bat_off, 0x10000,
                     entries, block)
    if parent:
        h[40:56] = parent
        name = "parent.vhd".encode("utf-16-be")
        h[64:64 + len(name)] = name
        for i, (code, data, off) in enumerate(loc_data):
            struct.pack_into(">4sIIIQ", h, 576 + 24 * i, code, 1, len(data), 0, off)
    struct.pack_into(">I", h, 36, checksum(h))
    f = footer(size, disk_type, 512, uid)
    out = bytearray(f + h + bat)
    for _, data, _ in loc_data:
        out += data.ljust(512, b"\0")
    return bytes(out + body + f), uid


def main(out):
    os.makedirs(out, exist_ok=True)
    fixed = bytearray(8192)
    fixed[512:1024] = b"\x5a" * 512
    seeds = {"fixed": bytes(fixed) + footer(8192, 2, 0xFFFFFFFFFFFFFFFF, uuid.uuid4().bytes)}
    seeds["dynamic"], parent = vhd(65536, 3, [(0, 3), (9, 1), (40, 8), (120, 7)])
    seeds["dynamic-empty"], _ = vhd(65536, 3, [])
    seeds["dynamic-odd-size"], _ = vhd(65536 + 1536, 3, [(127, 4)])
    seeds["differencing"], _ = vhd(
        65536, 4, [(1, 2), (33, 30)], parent=parent,
        locators=((b"MacX", "file://./parent.vhd"), (b"W2ru", ".\\parent.vhd"),
                  (b"W2ku", "C:\\vms\\parent.vhd")))
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main(sys.argv[1])
