"""Griffe extension: read toyflow's reST-flavoured docstrings as Markdown, without editing them.

Three reST constructs of the docstrings do not read as Markdown; this extension rewrites them in
the loaded docstrings (the source files are untouched):

* roles (below);
* "simple tables" (``=====  =====`` borders; a row whose first cell is blank continues the row
  above) become Markdown tables;
* a paragraph ending in ``::`` that introduces an indented literal block ends in ``:``, as reST
  prints it (the indented block is a code block in both languages).

Roles:

toyflow's docstrings are prose with ``literals`` (a Markdown code span too) and Sphinx roles such as
:class:`Sampler`, :func:`toyflow.interpolants.convert`, :meth:`quota` or :mod:`toyflow.search.budget`.
Each role target is resolved from the docstring owner's scope (its members, its parents and their
imports); a target that resolves becomes an optional autoref (a link when the object is rendered in
the API reference, plain code otherwise), one that does not stays code. Nothing is dropped and no
unresolved role can fail a strict build.
"""

from __future__ import annotations

import html
import re

import griffe

_BORDER = re.compile(r"^( *)(=+)((?: +=+)+) *$")
_ROLE = re.compile(r":(?:py:)?(class|func|meth|mod|data|attr|obj|exc|const):`(~?)\.?([A-Za-z_][\w.]*)(\(\))?`")


def _lookup(collection, path: str):
    try:
        return collection.get_member(path) if hasattr(collection, "get_member") else collection[path]
    except Exception:  # noqa: BLE001 - any lookup failure means "not an object we know"
        return None


def _resolve(obj, target: str, collection):
    if target.startswith("toyflow."):
        return target if _lookup(collection, target) is not None else None
    head, _, rest = target.partition(".")
    scope = obj
    while scope is not None:
        if head in scope.members:
            path = f"{scope.path}.{target}"
            if _lookup(collection, path) is not None:
                return path
        try:
            base = scope.resolve(head)
        except Exception:  # noqa: BLE001 - griffe raises NameResolutionError
            base = None
        if base:
            path = f"{base}.{rest}" if rest else base
            if _lookup(collection, path) is not None:
                return path
        scope = scope.parent
    return None


def _columns(border: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"=+", border)]


def _cells(line: str, cols: list[tuple[int, int]]) -> list[str]:
    out = []
    for i, (start, end) in enumerate(cols):
        stop = cols[i + 1][0] if i + 1 < len(cols) else len(line)
        out.append(line[start:stop].strip())
    return out


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def simple_tables(text: str) -> str:
    """Rewrite every reST simple table (header row between the first two borders) as a Markdown table."""
    lines = text.split("\n")
    out, i = [], 0
    while i < len(lines):
        m = _BORDER.match(lines[i])
        ends = [j for j in range(i + 1, len(lines)) if lines[j].strip() == lines[i].strip()] if m else []
        if len(ends) < 2 or ends[0] != i + 2:
            out.append(lines[i])
            i += 1
            continue
        border, end = lines[i], ends[1]
        cols = _columns(border)
        rows = [_cells(lines[i + 1], cols)]
        body = []
        for line in lines[i + 3 : end]:
            if not line.strip():
                continue
            cells = _cells(line, cols)
            if body and not cells[0]:  # continuation of the row above
                body[-1] = [f"{a} {b}".strip() for a, b in zip(body[-1], cells)]
            else:
                body.append(cells)
        indent = m.group(1)
        if out and out[-1].strip():
            out.append("")
        out.append(indent + _row(rows[0]))
        out.append(indent + "|" + "|".join("---" for _ in cols) + "|")
        out.extend(indent + _row(r) for r in body)
        out.append("")
        i = end + 1
    return "\n".join(out)


def literal_markers(text: str) -> str:
    """``text::`` before an indented block reads ``text:`` (reST's own rendering)."""
    return re.sub(r"(?<=\S)::[ \t]*(?=\n[ \t]*\n)", ":", text)


class RstRoles(griffe.Extension):
    """Rewrite ``:role:`target``` in every docstring of the package once it is loaded."""

    def on_package(self, *, pkg, loader, **kwargs):
        collection = loader.modules_collection
        self._walk(pkg, collection, set())

    def _walk(self, obj, collection, seen):
        if obj.path in seen or obj.is_alias:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            value = _ROLE.sub(lambda m: self._replace(obj, m, collection), obj.docstring.value)
            obj.docstring.value = literal_markers(simple_tables(value))
        for member in obj.members.values():
            if not member.is_alias:
                self._walk(member, collection, seen)

    @staticmethod
    def _replace(obj, m, collection) -> str:
        _, tilde, target, call = m.groups()
        shown = (target.rsplit(".", 1)[-1] if tilde else target) + (call or "")
        path = _resolve(obj, target, collection)
        code = f"<code>{html.escape(shown)}</code>"
        if path is None:
            return code
        return f'<autoref identifier="{html.escape(path)}" optional>{code}</autoref>'
