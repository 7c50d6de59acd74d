#!/usr/bin/env python3
"""Fails when two modules of one crate import each other (directly or through others).

A module is a file under crates/*/src (`foo.rs` or `foo/mod.rs` is module `foo`, `foo/bar.rs`
is `foo::bar`). An edge A -> B is any `crate::B` path in A's code (uses and inline paths) or
`super::B` from a submodule, outside `#[cfg(test)]` modules (tests may look anywhere). A parent
always has an edge to the children it declares, so a child that names its parent's items
(`super::X`) is a cycle.

    python3 scripts/module-cycles.py            # exit 1 and print the cycles, if any
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def module_name(src: pathlib.Path, f: pathlib.Path) -> str:
    rel = f.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return "::".join(parts) or "crate"


def strip_tests(text: str) -> str:
    # Drop `#[cfg(test)] mod x { ... }` blocks by brace matching.
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def edges_of(crate: pathlib.Path):
    src = crate / "src"
    files = sorted(src.rglob("*.rs"))
    mods = {module_name(src, f): f for f in files}
    graph = {m: set() for m in mods}
    for m, f in mods.items():
        text = strip_tests(f.read_text())
        text = re.sub(r"//[^\n]*", "", text)  # comments (doc links are not imports)
        targets = set()
        for path in re.findall(r"crate::((?:\w+::)*\w+)", text):
            targets.add(path)
        for path in re.findall(r"super::((?:\w+::)*\w+)", text):
            parent = m.rsplit("::", 1)[0] if "::" in m else "crate"
            targets.add(path if parent == "crate" else f"{parent}::{path}")
            if parent != "crate" and path.split("::")[0] not in {
                k.rsplit("::", 1)[-1] for k in mods if k.startswith(parent + "::")
            }:
                targets.add(parent)
        for t in targets:
            parts = t.split("::")
            # The longest prefix that is a module.
            for n in range(len(parts), 0, -1):
                cand = "::".join(parts[:n])
                if cand in mods:
                    if cand != m:
                        graph[m].add(cand)
                    break
    # A parent uses what it declares: a child that names its parent closes a cycle.
    for m in mods:
        if "::" in m:
            graph[m.rsplit("::", 1)[0]].add(m)
    return graph


def cycles(graph):
    found, index, low, stack, on, counter = [], {}, {}, [], set(), [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    return found


def main() -> int:
    bad = 0
    for crate in sorted((ROOT / "crates").iterdir()):
        if not (crate / "src").is_dir():
            continue
        graph = edges_of(crate)
        # The crate root declares everything; edges into it are re-export lookups.
        graph.pop("crate", None)
        for v in graph.values():
            v.discard("crate")
        for comp in cycles(graph):
            bad += 1
            print(f"{crate.name}: modules import each other: {' <-> '.join(comp)}")
    if not bad:
        print("no module cycles")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
