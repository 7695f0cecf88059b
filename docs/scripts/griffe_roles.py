"""Griffe extension for the docs build: Sphinx roles in docstrings become cross-references.

facepcl's docstrings are Google style and refer to other objects the Sphinx
way (:func:`facepcl.load`, :class:`~facepcl.PCLModel`, :meth:`embed`).
mkdocstrings does not read roles, so this rewrites each one into an
*optional* autorefs link: a link where the target is documented on the site,
plain code where it is not (never a broken link). Bare names are looked up
next to the object that mentions them (its class, then its module).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj):`(~?)([\w.]+)(\(\))?`")


def _target(obj: griffe.Object, name: str) -> str:
    if "." in name and name.split(".")[0] == "facepcl":
        return name
    scopes = [obj] + [p for p in _parents(obj)]
    for scope in scopes:
        try:
            if name.split(".")[0] in scope.members:
                return f"{scope.path}.{name}"
        except Exception:  # aliases that cannot be resolved here have no members to offer
            continue
    return f"{obj.module.path}.{name}" if "." not in name else name


def _parents(obj: griffe.Object):
    parent = obj.parent
    while parent is not None:
        yield parent
        parent = parent.parent


def rewrite(text: str, obj: griffe.Object) -> str:
    """``text`` with every Sphinx role replaced by an optional autorefs link."""

    def swap(m: re.Match) -> str:
        short, name, call = m.group(1), m.group(2), m.group(3) or ""
        shown = (name.rsplit(".", 1)[-1] if short else name) + call
        return f'<autoref identifier="{_target(obj, name)}" optional><code>{shown}</code></autoref>'

    return _ROLE.sub(swap, text)


class SphinxRoles(griffe.Extension):
    """Rewrite roles in every docstring griffe loads."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and ":" in obj.docstring.value:
            obj.docstring.value = rewrite(obj.docstring.value, obj)
