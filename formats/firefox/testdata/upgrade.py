# Run with: python3 upgrade.py
"""Derive later-format variants of the real v49 samply profile, so the reader
is tested on every layout change without a samply HEAD build at hand.

  python3 upgrade.py  (in this directory)

writes v49-as-v56.json (strings in profile.shared, timeDeltas),
v49-as-v66.json (all tables in profile.shared, stackTable.prefixOffset) and
v49-as-v70.json (frameTable.lib, no resourceTable.lib). The stacks and
weights are the same as in the v49 file: only the layout changes, following
firefox-devtools/profiler src/profile-logic/processed-profile-versioning.js.
"""
import copy, json

src = json.load(open("ffprofiler-samply-macos-unsymbolicated-v49.json"))

def deltas(times):
    out, prev = [], 0.0
    for t in times:
        out.append(round(t - prev, 6)); prev = t
    return out

def v56(p):
    p = copy.deepcopy(p)
    strings, index = [], {}
    for th in p["threads"]:
        th_strings = th.pop("stringArray")
        def remap(i):
            if i is None: return None
            v = th_strings[i]
            if v not in index:
                index[v] = len(strings); strings.append(v)
            return index[v]
        th["funcTable"]["name"] = [remap(i) for i in th["funcTable"]["name"]]
        th["funcTable"]["fileName"] = [remap(i) for i in th["funcTable"]["fileName"]]
        th["resourceTable"]["name"] = [remap(i) for i in th["resourceTable"]["name"]]
        th["nativeSymbols"]["name"] = [remap(i) for i in th["nativeSymbols"]["name"]]
        smp = th["samples"]
        smp["timeDeltas"] = deltas(smp.pop("time"))
    p["shared"] = {"stringArray": strings}
    p["meta"]["preprocessedProfileVersion"] = 56
    return p

def v66(p):
    p = v56(p)
    sh = p["shared"]
    names = ["stackTable", "frameTable", "funcTable", "resourceTable", "nativeSymbols"]
    tabs = {n: None for n in names}
    for th in p["threads"]:
        off = {n: (tabs[n]["length"] if tabs[n] else 0) for n in names}
        t = {n: th.pop(n) for n in names}
        # re-index this thread's references into the shared tables
        t["stackTable"]["frame"] = [f + off["frameTable"] for f in t["stackTable"]["frame"]]
        t["stackTable"]["prefix"] = [None if x is None else x + off["stackTable"] for x in t["stackTable"]["prefix"]]
        t["frameTable"]["func"] = [f + off["funcTable"] for f in t["frameTable"]["func"]]
        t["frameTable"]["nativeSymbol"] = [None if x is None else x + off["nativeSymbols"] for x in t["frameTable"]["nativeSymbol"]]
        t["funcTable"]["resource"] = [x if x is None or x < 0 else x + off["resourceTable"] for x in t["funcTable"]["resource"]]
        th["samples"]["stack"] = [None if x is None else x + off["stackTable"] for x in th["samples"]["stack"]]
        for n in names:
            if tabs[n] is None:
                tabs[n] = t[n]
            else:
                for k, v in t[n].items():
                    if isinstance(v, list): tabs[n][k].extend(v)
                tabs[n]["length"] += t[n]["length"]
    st = tabs["stackTable"]
    st["prefixOffset"] = [0 if x is None else i - x for i, x in enumerate(st.pop("prefix"))]
    del st["category"], st["subcategory"]
    sh.update(tabs)
    p["meta"]["preprocessedProfileVersion"] = 66
    return p

def v70(p):
    p = v66(p)
    sh = p["shared"]
    res_lib = sh["resourceTable"].pop("lib")
    ft, fn = sh["frameTable"], sh["funcTable"]
    ft["lib"] = [res_lib[fn["resource"][f]] if fn["resource"][f] is not None and fn["resource"][f] >= 0 else -1 for f in ft["func"]]
    p["meta"]["preprocessedProfileVersion"] = 70
    return p

for name, f in [("v49-as-v56.json", v56), ("v49-as-v66.json", v66), ("v49-as-v70.json", v70)]:
    json.dump(f(src), open(name, "w"), separators=(",", ":"))
