# Run with: python3 expect.py
"""Independent reference for the golden files: walks each thread's samples
the way the Firefox Profiler's call tree does (stack -> prefix chain ->
frame -> func -> name; weight null = 1; null stacks skipped) and prints
"process;thread (tid);root;...;leaf WEIGHT" lines, sorted, with the totals.
Unsymbolicated names "0x.." become "LIB+0x..". Only for per-thread-table
files (v41-v55), which is what the real fixtures are.

  python3 expect.py FILE.json > golden/FILE.folded
"""
import collections, json, sys

p = json.load(open(sys.argv[1]))
libs = p["libs"]
out = collections.Counter()
total = 0
for th in p["threads"]:
    S, st, ft, fn, rt = th["stringArray"], th["stackTable"], th["frameTable"], th["funcTable"], th["resourceTable"]
    smp = th["samples"]
    w = smp.get("weight") or [1] * len(smp["stack"])
    for s, wt in zip(smp["stack"], w):
        if s is None:
            continue
        names = []
        while s is not None:
            f = st["frame"][s]
            func = ft["func"][f]
            name = S[fn["name"][func]]
            if name.startswith("0x"):
                res = fn["resource"][func]
                if res is not None and res >= 0:
                    name = libs[rt["lib"][res]]["name"] + "+" + name
            names.append(name)
            s = st["prefix"][s]
        key = ";".join([th.get("processName", ""), "%s (%s)" % (th["name"], th["tid"])] + names[::-1])
        out[key] += wt
        total += wt
print("# total weight %d" % total)
for k in sorted(out):
    print("%s %d" % (k, out[k]))
