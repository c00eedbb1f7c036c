#!/usr/bin/env python3
"""Where the heap was at its peak (t-gmax) and at exit (t-end), from a dhat-heap-<pid>.json.

Usage: hack/dhat-top.py dhat-heap-1234.json [--top 40] [--by holder|tenantry|site]

--by holder (default) groups each allocation by what holds it: the cache of a kind (whole
objects, or projections), kube's reconcile scheduler, the organization views, metrics,
Argon2, the HTTP connections' buffers; --by tenantry under its first frame in Tenantry's
own code; --by site under its innermost frame outside the allocator and the standard
library (which data structure allocates it).

A profile written on SIGUSR1 (`make profile-heap` sends it to the first controller once
settled) has the settled heap at t-end.
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


def holder(frames):
    s = " | ".join(frames)
    m = re.search(r"apply_watcher_event<tenantry::api::(\w+)::", s)
    if m:
        return "cache of " + m.group(1) + " (whole objects)"
    if "PartialObjectMeta" in s:
        return "cache of secrets/configmaps (metadata)"
    if "tenantry::slim" in s or "slim.rs" in s:
        m = re.search(r"(?:of|apply|keep)<k8s_openapi::v\d+_\d+::api::\w+::v1::(\w+)::", s)
        return "cache of " + (m.group(1) if m else "?") + " (projections)"
    m = re.search(r"ReconcileRequest<tenantry::api::(\w+)::", s)
    if m or "kube_runtime::scheduler" in s:
        return "kube's reconcile scheduler: " + (m.group(1) if m else "?")
    if "argon2" in s:
        return "argon2 working memory"
    if "view.rs" in s or "OrgView" in s:
        return "organization views"
    if "metrics" in s or "prometheus_client" in s:
        return "metrics"
    if "hyper" in s or "bytes_mut" in s:
        return "HTTP connections"
    if "caches.rs" in s:
        return "caches (other)"
    return "other"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--by", choices=["holder", "tenantry", "site"], default="holder")
    a = ap.parse_args()
    d = json.load(open(a.file))
    ftbl = d["ftbl"]
    groups = defaultdict(lambda: [0, 0, 0, 0])
    total = [0, 0, 0, 0]
    for pp in d["pps"]:
        frames = [name(ftbl[i]) for i in pp["fs"]]
        key = holder(frames) if a.by == "holder" else None
        for f in [] if key else frames:
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
