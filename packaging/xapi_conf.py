#!/usr/bin/env python3
"""Reads xapi's configuration as xapi does, and prints the settings it ends with.

The rules are those of Xcp_service (xapi-project/xen-api, ocaml/xapi-idl/lib/
xcp_service.ml): /etc/xapi.conf first, then every entry of /etc/xapi.conf.d in
name order (no extension is required; a later file overrides an earlier one).
In each line everything from the first '#' on is a comment, trailing spaces
and tabs go, and the first `KEY = VALUE` in what is left (KEY: no '=', space
or tab; spaces and tabs around '=') sets KEY to VALUE; a VALUE of two or more
characters between matching quotes (" or ') loses them. A resource setting
that is not an absolute path is looked up on PATH.

    xapi_conf.py ROOT [KEY...]   prints KEY=VALUE for each KEY (all keys if none)
                                 as xapi would read them under ROOT, one a line
"""
import os
import re
import sys

KV = re.compile(r"([^= \t]+)[ \t]*=[ \t]*(.*)")


def parse_line(line):
    line = line.split("#", 1)[0]
    line = re.sub(r"[ \t]+$", "", line)
    m = KV.search(line)
    if not m:
        return None
    key, value = m.group(1), m.group(2)
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return key, value


def read(root):
    settings = {}
    files = []
    conf = os.path.join(root, "etc/xapi.conf")
    if os.path.exists(conf):
        files.append(conf)
    confd = os.path.join(root, "etc/xapi.conf.d")
    if os.path.isdir(confd):
        files += [os.path.join(confd, f) for f in sorted(os.listdir(confd))]
    for path in files:
        with open(path, encoding="latin-1") as f:
            for line in f.read().split("\n"):
                kv = parse_line(line)
                if kv:
                    settings[kv[0]] = kv[1]
    return settings


def main():
    root, keys = sys.argv[1], sys.argv[2:]
    settings = read(root)
    for key in keys or sorted(settings):
        if key in settings:
            print("%s=%s" % (key, settings[key]))


if __name__ == "__main__":
    main()
