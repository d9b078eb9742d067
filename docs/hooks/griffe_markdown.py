"""Griffe extension: turns the reST flavour of the docstrings into Markdown for mkdocstrings.

The docstrings are written for ``help()`` and IDEs, in short reST (itsdangerous style):
Sphinx roles (``:class:`~twilio_feedback.ConfirmResult```, ``:meth:`Store.confirm```),
``.. code-block:: python`` directives and ``::`` literal blocks. At docs build time each
role becomes a cross-reference to the object's page, resolved as Python would resolve the
name from where the docstring is; a name that cannot be resolved inside the package is a
warning (so ``mkdocs build --strict`` fails on a typo), a dotted name of another library
(``datetime.timedelta``, ``sqlalchemy.create_engine``) stays code. Links are optional: an
object the reference does not render (a private helper, an internal module) shows as code
instead of failing the build.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from html import escape
from typing import Any

import griffe

PACKAGE = "twilio_feedback"
ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|data|mod|exc|obj|const):`(~?)([^`]+)`")
CODE_BLOCK = re.compile(r"^( *)\.\. code-block:: *(\w*) *$")

Resolver = Callable[[str], "str | None"]


def roles_to_markdown(text: str, resolve: Resolver) -> str:
    """Replace every Sphinx role in ``text`` by an autorefs link (or code, if ``resolve``
    returns None for its target)."""

    def replace(match: re.Match[str]) -> str:
        tilde, target = match.groups()
        target = target.strip()
        title = target.rsplit(".", 1)[-1] if tilde else target
        path = resolve(target)
        if path is None:
            return f"`{title}`"
        return (
            f'<autoref identifier="{escape(path)}" optional><code>{escape(title)}</code></autoref>'
        )

    return ROLE.sub(replace, text)


def blocks_to_markdown(text: str) -> str:
    """``.. code-block:: lang`` and paragraphs ending in ``::`` followed by an indented block
    become fenced code blocks."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        directive = CODE_BLOCK.match(line)
        literal = line.rstrip().endswith("::") and not directive
        if not (directive or literal):
            out.append(line)
            i += 1
            continue
        if directive:
            indent, language = len(directive.group(1)), directive.group(2)
        else:
            indent, language = len(line) - len(line.lstrip()), ""
            text_before = line.rstrip()[:-2].rstrip()
            if text_before:
                out.append(line.rstrip()[:-1])  # "Layout::" -> "Layout:"
        i += 1
        block: list[str] = []
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
        ):
            block.append(lines[i])
            i += 1
        while block and not block[-1].strip():
            block.pop()
        while block and not block[0].strip():
            block.pop(0)
        if not block:
            continue
        strip = min(len(b) - len(b.lstrip()) for b in block if b.strip())
        out.append("")
        out.append(" " * indent + f"```{language}")
        out.extend(" " * indent + b[strip:] if b.strip() else "" for b in block)
        out.append(" " * indent + "```")
        out.append("")
    return "\n".join(out)


def _objects(obj: griffe.Object) -> Iterator[griffe.Object]:
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _objects(member)  # type: ignore[arg-type]


class SphinxToMarkdown(griffe.Extension):
    """Rewrites every docstring of the package once it is loaded.

    ``warn=False`` keeps quiet about broken cross-references (for a second load of the
    same package in one build, whose warnings would repeat the first's).
    """

    def __init__(self, warn: bool = True) -> None:
        super().__init__()
        self.warn = warn

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.name != PACKAGE:
            return
        collection = loader.modules_collection
        objects = list(_objects(pkg))
        for obj in objects:
            if obj.docstring is None:
                continue

            def warn(message: str, obj: griffe.Object = obj) -> None:
                if self.warn:
                    griffe.logger.warning(f"{obj.path}: {message}")

            def resolve(target: str, obj: griffe.Object = obj) -> str | None:
                head, _, rest = target.partition(".")
                if head == PACKAGE:
                    path = target
                else:
                    try:
                        base = obj.resolve(head)
                    except griffe.NameResolutionError:
                        # As Sphinx does: any object of the package whose path ends so.
                        matches = [o.path for o in objects if o.path.endswith("." + target)]
                        if len(matches) == 1:
                            return _public(matches[0])
                        if matches:
                            warn(f"cross-reference {target!r} is ambiguous: {matches}")
                        elif rest and head.islower():
                            return None  # another library's name: datetime.timedelta
                        else:
                            warn(f"cross-reference {target!r} names nothing in scope")
                        return None
                    path = f"{base}.{rest}" if rest else base
                if not path.startswith(PACKAGE + "."):
                    return None
                try:
                    found = collection[path]
                    canonical = found.canonical_path if found.is_alias else found.path
                except (KeyError, griffe.AliasResolutionError):
                    warn(f"cross-reference {target!r} ({path}) does not exist")
                    return None
                return _public(canonical)

            value = blocks_to_markdown(obj.docstring.value)
            obj.docstring.value = roles_to_markdown(value, resolve)

        # As inspect.getdoc does: a method with no docstring of its own shows its base
        # class's, so that each built-in store's page carries the Store contract.
        for obj in objects:
            if isinstance(obj, griffe.Class):
                inherit_docstrings(obj)

        # Re-exports (``twilio_feedback.FeedbackTracker``) are documented once, in their
        # module; make their members reachable by the public path too, so a guide can
        # link ``twilio_feedback.FeedbackTracker.send``.
        for obj in objects:
            for alias in list(obj.aliases.values()):
                parent = alias.parent
                exported = parent is not None and alias.name in (parent.exports or ())
                if exported and obj.is_class:
                    for member in alias.members.values():
                        if isinstance(member, griffe.Alias) and not member.name.startswith("_"):
                            member.final_target.aliases.setdefault(member.path, member)


def inherit_docstrings(cls: griffe.Class) -> None:
    """Give each public member of ``cls`` that has no docstring the docstring of the same
    member in the nearest base class that has one."""
    try:
        bases = cls.mro()
    except (ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return  # an inconsistent or unresolvable hierarchy: leave it as written
    for name, member in cls.members.items():
        if member.is_alias or member.docstring is not None or name.startswith("_"):
            continue
        for base in bases:
            found = base.members.get(name)
            if found is None or found.is_alias or found.docstring is None:
                continue
            member.docstring = griffe.Docstring(
                found.docstring.value,
                lineno=found.docstring.lineno,
                endlineno=found.docstring.endlineno,
                parent=member,
                parser=found.docstring.parser,
                parser_options=found.docstring.parser_options,
            )
            break


def _public(path: str) -> str | None:
    """``path``, unless a part of it is private (no page renders it: show it as code)."""
    return None if any(part.startswith("_") for part in path.split(".")) else path
