#!/usr/bin/env python3
"""Where the heap was at its peak (t-gmax) and at exit (t-end), from a dhat-heap-<pid>.json.

Usage: hack/dhat-top.py dhat-heap-1234.json [--top 40] [--by tenantry|site]

--by tenantry (default) groups each allocation under its first frame in Tenantry's own code
(what in Tenantry holds the bytes); --by site under its innermost frame outside the
allocator and the standard library (which data structure allocates them).
"""
import argparse
import json
import re
from collections import defaultdict

SKIP = re.compile(r"^(alloc::|core::|std::|dhat::|<alloc::|<core::|<std::|hashbrown::|<hashbrown::|\[root\])")


def name(frame):
    # "0x55d...: tenantry::slim::Slim<K>::new (src/slim.rs:120:9)"
    frame = frame.split(": ", 1)[-1]
    return re.sub(r"::h[0-9a-f]{16}", "", frame)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--by", choices=["tenantry", "site"], default="tenantry")
    a = ap.parse_args()
    d = json.load(open(a.file))
    ftbl = d["ftbl"]
    groups = defaultdict(lambda: [0, 0, 0, 0])
    total = [0, 0, 0, 0]
    for pp in d["pps"]:
        frames = [name(ftbl[i]) for i in pp["fs"]]
        key = None
        for f in frames:
            if a.by == "tenantry" and ("tenantry::" in f or "scale::" in f):
                key = f
                break
            if a.by == "site" and not SKIP.match(f):
                key = f
                break
        key = key or (frames[-1] if frames else "?")
        g = groups[key]
        vals = (pp.get("gb", 0), pp.get("gbk", 0), pp.get("eb", 0), pp.get("ebk", 0))
        for i, v in enumerate(vals):
            g[i] += v
            total[i] += v
    print(f"peak (t-gmax) {total[0]/2**20:.1f} MiB in {total[1]} blocks; "
          f"end (t-end) {total[2]/2**20:.1f} MiB in {total[3]} blocks")
    print(f"| MiB at peak | blocks | MiB at end | blocks | where |")
    print("|---|---|---|---|---|")
    for key, g in sorted(groups.items(), key=lambda kv: -kv[1][0])[: a.top]:
        print(f"| {g[0]/2**20:.2f} | {g[1]} | {g[2]/2**20:.2f} | {g[3]} | {key[:160]} |")


if __name__ == "__main__":
    main()
