#!/usr/bin/env python3
"""Fails when a crate's top-level modules import each other in a circle.

An edge a -> b is any `crate::b` path (or `use crate::{b, ...}`) in src/a.rs or
src/a/..., comments and `#[cfg(test)] mod tests` left out. Prints each circle
(strongly connected component) as `crate-dir: a <-> b` and exits 1 if any.
Usage: scripts/check-import-cycles.py [ROOT]"""
import os, re, sys, itertools
def modname(root, path):
    rel = os.path.relpath(path, root)[:-3]
    parts = rel.split(os.sep)
    if parts[-1] in ("mod", "lib", "main"): parts = parts[:-1]
    return parts[0] if parts else "crate"
def crate_graph(src):
    g = {}
    for dp, _, fs in os.walk(src):
        for f in fs:
            if not f.endswith(".rs"): continue
            p = os.path.join(dp, f)
            m = modname(src, p)
            text = re.sub(r"//[^\n]*", "", open(p).read())
            text = re.sub(r"#\[cfg\(test\)\]\s*mod tests\s*\{.*", "", text, flags=re.S)
            refs = set(re.findall(r"crate::(\w+)", text))
            for block in re.findall(r"use crate::\{([^;]*)\};", text, flags=re.S):
                depth=0; tok=''; tops=[]
                for ch in block:
                    if ch=='{': depth+=1
                    elif ch=='}': depth-=1
                    elif ch==',' and depth==0: tops.append(tok); tok=''; continue
                    tok+=ch
                tops.append(tok)
                for t in tops:
                    t=t.strip()
                    if t: refs.add(re.split(r"::|\s", t)[0])
            if dp != src and os.path.basename(dp)==m:
                pass
            for r in refs:
                if r != m and r not in ("self",): g.setdefault(m,set()).add(r)
            g.setdefault(m,set())
    return g
def cycles(g):
    out=[]
    idx={}; low={}; st=[]; on=set(); c=[0]
    def sc(v):
        idx[v]=low[v]=c[0]; c[0]+=1; st.append(v); on.add(v)
        for w in g.get(v,()):
            if w not in g: continue
            if w not in idx: sc(w); low[v]=min(low[v],low[w])
            elif w in on: low[v]=min(low[v],idx[w])
        if low[v]==idx[v]:
            comp=[]
            while True:
                w=st.pop(); on.discard(w); comp.append(w)
                if w==v: break
            if len(comp)>1: out.append(sorted(comp))
    for v in list(g):
        if v not in idx: sc(v)
    return out
root=sys.argv[1] if len(sys.argv)>1 else "."
found=[]
for dp, ds, fs in os.walk(root):
    if "target" in dp or "/." in dp or "node_modules" in dp: continue
    if "Cargo.toml" in fs and os.path.isdir(os.path.join(dp,"src")):
        cs=cycles(crate_graph(os.path.join(dp,"src")))
        for comp in cs:
            found.append(f"{os.path.relpath(dp,root)}: {' <-> '.join(comp)}")
for line in found:
    print(f"import circle: {line}", file=sys.stderr)
sys.exit(1 if found else 0)
