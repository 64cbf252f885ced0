#!/usr/bin/env python3
"""The library's module graph: which top-level modules each one uses, and whether it has cycles.

Reads src/ (the library; src/bin is the CLI and sits above everything). For each top-level
module (src/X.rs or src/X/), collects the `crate::X` paths its code names, including
`use crate::{a, b::c}` groups and `super::...` chains that climb to the crate root,
resolved through inline `mod name { ... }` blocks. Code only: comments and strings are
stripped first. Intra-doc links (`[...](crate::X)` or `` [`crate::X::Y`] ``) are counted
apart, so a link pointing up a layer shows without being a code dependency.

Usage: scripts/module-graph.py [SRC_DIR]; exits 1 when the code graph has a cycle.
"""

import re
import sys
from pathlib import Path

SRC = Path(sys.argv[1] if len(sys.argv) > 1 else "src")
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip(text):
    """Splits source into code (comments and string contents blanked) and doc comment text."""
    code, docs = [], []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            if text.startswith("///", i) or text.startswith("//!", i):
                docs.append(text[i + 3 : end])
            i = end
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == '"' or (c == "r" and re.match(r'r#*"', text[i:]) and not re.match(r"\w", text[i - 1 : i] or " ")):
            if c == "r":
                hashes = re.match(r"r(#*)\"", text[i:]).group(1)
                close = '"' + hashes
                i += 2 + len(hashes)
                end = text.find(close, i)
                end = n if end < 0 else end
                body = text[i:end]
                i = end + len(close)
            else:
                i += 1
                start = i
                while i < n and text[i] != '"':
                    i += 2 if text[i] == "\\" else 1
                body = text[start:i]
                i += 1
            # Doc attributes hold docs in strings: keep their text as docs.
            docs.append(body)
            code.append('""')
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:]):
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:])
            code.append("' '")
            i += len(m.group(0))
        else:
            code.append(c)
            i += 1
    return "".join(code), "\n".join(docs)


def file_module(path):
    """The module path of a source file, e.g. src/cpu/convnet/conv.rs -> ['cpu', 'convnet', 'conv']."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return parts


def group_heads(text, start):
    """The first segment of each element of a `{...}` use group starting at text[start] == '{'."""
    depth, heads, expect = 0, [], True
    i = start
    while i < len(text):
        c = text[i]
        if c == "{":
            depth += 1
            i += 1
            if depth == 1:
                expect = True
            continue
        if c == "}":
            depth -= 1
            if depth == 0:
                break
        elif c == "," and depth == 1:
            expect = True
        elif expect and depth == 1:
            m = re.match(IDENT, text[i:])
            if m:
                heads.append(m.group(0))
                expect = False
                i += len(m.group(0))
                continue
        i += 1
    return heads


def resolve(base, segments):
    """Resolves `super`/`self` segments against the module path `base`; None when it leaves the crate."""
    path = list(base)
    for s in segments:
        if s == "super":
            if not path:
                return None
            path.pop()
        elif s == "self":
            continue
        else:
            path.append(s)
    return path


PATH_RE = re.compile(r"(?<![\w$])(crate|super|self)((?:\s*::\s*(?:" + IDENT + r"))*)(\s*::\s*\{)?")


def code_edges(code, base):
    """Top-level modules named by the code of a file whose module path is `base`."""
    # Inline modules (`mod tests { ... }`) shift what `super` means: map offsets to paths.
    scopes = []  # (brace depth at opening, module name)
    depth = 0
    found = set()
    i = 0
    mod_open = re.compile(r"\bmod\s+(" + IDENT + r")\s*\{")
    events = []
    for m in mod_open.finditer(code):
        events.append((m.end() - 1, m.group(1)))
    opens = {pos: name for pos, name in events}
    path_at = {}
    for i, c in enumerate(code):
        if c == "{":
            depth += 1
            if i in opens:
                scopes.append((depth, opens[i]))
        elif c == "}":
            if scopes and scopes[-1][0] == depth:
                scopes.pop()
            depth -= 1
        path_at[i] = len(scopes) and [s[1] for s in scopes]
    for m in PATH_RE.finditer(code):
        here = list(base) + (path_at.get(m.start()) or [])
        segs = [m.group(1)] + [s.strip() for s in m.group(2).split("::") if s.strip()]
        if segs[0] == "crate":
            target = segs[1:]
        else:
            target = resolve(here, segs)
        if target is None:
            continue
        if m.group(3):
            heads = group_heads(code, m.end() - 1)
            targets = [target + [h] for h in heads] if target == [] else [target]
        else:
            targets = [target]
        for t in targets:
            if t and t[0] not in ("self", "super", "crate"):
                found.add(t[0])
    return found


DOC_RE = re.compile(r"(?<![\w$])crate::(" + IDENT + r")")


def main():
    modules = {}
    for f in sorted(SRC.rglob("*.rs")):
        rel = f.relative_to(SRC)
        if rel.parts[0] == "bin" or rel == Path("lib.rs") or rel == Path("main.rs"):
            continue
        top = rel.parts[0].removesuffix(".rs")
        modules.setdefault(top, []).append(f)
    names = set(modules)
    graph, docs = {}, {}
    for top, files in modules.items():
        uses, links = set(), set()
        for f in files:
            code, doc = strip(f.read_text())
            uses |= code_edges(code, tuple(file_module(f)))
            links |= set(DOC_RE.findall(doc))
        graph[top] = sorted((uses & names) - {top})
        docs[top] = sorted((links & names) - {top} - set(graph[top]))

    # Topological order (leaves first); whatever remains is on a cycle.
    order, left = [], dict((k, set(v)) for k, v in graph.items())
    while True:
        ready = sorted(k for k, v in left.items() if not v - set(order))
        if not ready:
            break
        order += ready
        for k in ready:
            del left[k]
    width = max(map(len, names))
    for top in order + sorted(left):
        line = f"{top:<{width}} -> {', '.join(graph[top]) or '(leaf)'}"
        if docs[top]:
            line += f"   [doc links only: {', '.join(docs[top])}]"
        print(line)
    def reaches(src, dst, seen=()):
        return src == dst or any(reaches(n, dst, seen + (src,)) for n in graph[src] if n not in seen)

    # A doc link points up when the linked module depends on the linking one.
    up = [(a, b) for a in sorted(docs) for b in docs[a] if reaches(b, a)]
    for a, b in up:
        print(f"doc link points up: {a} -> {b}")
    if left:
        print(f"CYCLE among: {', '.join(sorted(left))}")
        return 1
    print(f"acyclic: {len(order)} modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
