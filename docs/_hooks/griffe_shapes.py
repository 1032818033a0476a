"""Griffe extension for the API pages: docstrings here state tensor shapes as ``[T, A]``, which Markdown reads as
reference links (and mkdocs-autorefs then reports as unresolved). This escapes a bracket pair that is not a link
(no ``(`` or ``[`` right after it) so it renders as written. Code spans (backticks) are left alone."""

from __future__ import annotations

import re
from typing import Any

import griffe

_SHAPE = re.compile(r"(?<!\\)\[([^\[\]\n]*)\](?![(\[])")
_CODE = re.compile(r"(``?[^`]*``?)")


def escape_shapes(text: str) -> str:
    """``[T, A]`` -> ``\\[T, A\\]`` outside code spans; links ``[text](url)`` untouched."""
    parts = _CODE.split(text)
    return "".join(p if i % 2 else _SHAPE.sub(r"\\[\1\\]", p) for i, p in enumerate(parts))


class EscapeShapes(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = escape_shapes(obj.docstring.value)
