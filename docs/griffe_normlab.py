"""A griffe extension for the documentation build (mkdocs.yml): normlab's docstrings say
``Example:`` (Google style's singular, which griffe would render as a plain admonition, doctest
lines as prose) and here and there use Sphinx roles (:class:`X`); both are rewritten for
rendering only: the docstrings themselves are unchanged."""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:[ \t]*$", re.M)
_ROLE = re.compile(r":(?:mod|class|func|meth|attr|data|obj|exc):`~?([^`]+)`")


class NormlabDocstrings(griffe.Extension):
    """``Example:`` sections become ``Examples:`` (doctests rendered as code), Sphinx roles
    become code spans."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = _ROLE.sub(r"``\1``", value)
