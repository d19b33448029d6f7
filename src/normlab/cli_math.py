"""The docstrings' LaTeX as plain Unicode text, for ``normlab describe`` in a terminal.

Covers the LaTeX the method docstrings use: ``\\frac`` becomes ``a / b`` (with parentheses where
a side has more than one term), ``\\sqrt`` ``√(…)``, Greek letters and operators their Unicode
characters, ``^2`` and ``_k`` Unicode super- and subscripts where every character has one
(``^(…)`` and ``_…`` otherwise), and a product written by juxtaposition (``\\gamma \\frac``) an
explicit ``·``. ``\\quad`` between top-level clauses starts a new line. Unknown commands are
kept by name without the backslash.

Example:
    >>> plain(r"y = \\gamma \\frac{x - \\mu}{\\sqrt{\\sigma^2 + \\epsilon}} + \\beta")
    'y = γ · (x − μ) / √(σ² + ε) + β'
    >>> plain(r"w = g \\frac{v}{\\lVert v \\rVert_2}")
    'w = g · v / ‖v‖₂'
    >>> text(r"See ``momentum=None`` and $\\cos(w_o, x)$.")
    'See momentum=None and cos(wₒ, x).'
"""

from __future__ import annotations

import re

__all__ = ["plain", "text"]

_GREEK = {
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ε", "varepsilon": "ε",
    "zeta": "ζ", "eta": "η", "theta": "θ", "kappa": "κ", "lambda": "λ", "mu": "μ", "nu": "ν",
    "xi": "ξ", "pi": "π", "rho": "ρ", "sigma": "σ", "tau": "τ", "phi": "φ", "chi": "χ",
    "psi": "ψ", "omega": "ω", "Gamma": "Γ", "Delta": "Δ", "Theta": "Θ", "Lambda": "Λ",
    "Sigma": "Σ", "Phi": "Φ", "Psi": "Ψ", "Omega": "Ω", "infty": "∞", "ell": "ℓ",
    "ldots": "…", "cdots": "⋯", "top": "ᵀ",
}  # fmt: skip
_OPERATORS = {
    "cdot": "·", "times": "×", "in": "∈", "leftarrow": "←", "rightarrow": "→", "to": "→",
    "oplus": "⊕", "pm": "±", "le": "≤", "leq": "≤", "ge": "≥", "geq": "≥", "approx": "≈",
    "sim": "~", "neq": "≠", "propto": "∝",
}  # fmt: skip
_FUNCTIONS = {"max": "max", "min": "min", "tanh": "tanh", "exp": "exp", "log": "log",
              "cos": "cos", "sin": "sin", "sum": "Σ", "prod": "Π", "arg": "arg"}  # fmt: skip
_NAMED_FUNCTIONS = {"clip", "softmax", "sigmoid", "ReLU", "sign", "diag", "Var", "E"}
_TEXT_ARG = {"mathrm", "text", "operatorname", "mathbf", "textrm", "mathit", "mathsf"}
_ACCENTS = {"hat": "\u0302", "bar": "\u0304", "tilde": "\u0303", "vec": "\u20d7"}
_CALLIGRAPHIC = {"N": "𝒩", "U": "𝒰", "L": "ℒ", "O": "𝒪"}
_IGNORED = {"left", "right", "big", "Big", "bigg", "Bigg", "bigl", "bigr", "Bigl", "Bigr",
            "displaystyle", "limits", "!"}  # fmt: skip
_THIN_SPACES = {",", ";", ":", " "}
_SUP = dict(zip("0123456789+-−=()niTp", "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁻⁼⁽⁾ⁿⁱᵀᵖ", strict=True))
_SUB = dict(zip("0123456789+-=()aehijklmnoprstuvx", "₀₁₂₃₄₅₆₇₈₉₊₋₌₍₎ₐₑₕᵢⱼₖₗₘₙₒₚᵣₛₜᵤᵥₓ",
                strict=True))  # fmt: skip
_TOKEN = re.compile(r"\\[A-Za-z]+|\\.|\s+|.", re.DOTALL)
_TIGHT = " +−=,/·×∈←→⊕±≤≥≈"  # a side holding one of these (outside brackets) gets parentheses


def _simple(s: str) -> bool:
    """True when ``s`` reads as one factor: no operator or space outside brackets."""
    depth, bars = 0, {"|": False, "‖": False}
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch in bars:
            bars[ch] = not bars[ch]
        elif depth == 0 and not any(bars.values()) and ch in _TIGHT:
            return False
    return True


def _wrap(s: str) -> str:
    return s if _simple(s) else f"({s})"


def _script(s: str, table: dict[str, str], mark: str) -> str:
    if s and all(ch in table for ch in s):
        return "".join(table[ch] for ch in s)
    if s in ("ᵀ",):
        return s
    return mark + _wrap(s)


class _Parser:
    """Recursive descent over the tokens; items are ``(kind, text)`` pairs."""

    def __init__(self, source: str) -> None:
        self.tokens = _TOKEN.findall(source)
        self.pos = 0
        self.bars = {"|": 0, "‖": 0}

    def next(self) -> str | None:
        if self.pos >= len(self.tokens):
            return None
        self.pos += 1
        return self.tokens[self.pos - 1]

    def argument(self) -> str:
        """The next ``{...}`` group or single token, rendered."""
        while self.pos < len(self.tokens) and self.tokens[self.pos].isspace():
            self.pos += 1
        token = self.next()
        if token is None:
            return ""
        if token == "{":
            return _render(self.items("}"), top=False)
        return _render(self.item(token), top=False)

    def items(self, end: str | None) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        while (token := self.next()) is not None and token != end:
            if token in ("^", "_"):
                arg = self.argument()
                table, mark = (_SUP, "^") if token == "^" else (_SUB, "_")
                last = next((i for i in range(len(out) - 1, -1, -1) if out[i][0] != "space"), None)
                if last is None:
                    out.append(("atom", _script(arg, table, mark)))
                else:
                    kind, text = out[last]
                    out[last] = (kind, text + _script(arg, table, mark))
                continue
            out += self.item(token)
        return out

    def item(self, token: str) -> list[tuple[str, str]]:
        if token.isspace():
            return [("space", " ")]
        if token == "{":
            return [("atom", _render(self.items("}"), top=False))]
        if token.startswith("\\"):
            return self.command(token[1:])
        if token in "([":
            return [("open", token)]
        if token in ")]":
            return [("close", token)]
        if token in "|‖":
            self.bars[token] += 1
            return [("open" if self.bars[token] % 2 else "close", token)]
        if token in "+-=<>":
            return [("op", "−" if token == "-" else token)]
        if token == ",":
            return [("punct", ",")]
        if token == "/":
            return [("slash", "/")]
        if token == "'":
            return [("prime", "′")]
        if token.isdigit():
            return [("number", token)]
        return [("atom", token)]

    def command(self, name: str) -> list[tuple[str, str]]:
        if name in ("frac", "tfrac", "dfrac"):
            numerator, denominator = self.argument(), self.argument()
            return [("frac", f"{_wrap(numerator)} / {_wrap(denominator)}")]
        if name == "sqrt":
            arg = self.argument()
            return [("atom", "√" + (arg if len(arg) == 1 else f"({arg})"))]
        if name in _GREEK:
            return [("atom", _GREEK[name])]
        if name in _OPERATORS:
            return [("op", _OPERATORS[name])]
        if name in _FUNCTIONS:
            return [("func", _FUNCTIONS[name])]
        if name in _TEXT_ARG:
            arg = self.argument()
            return [("func" if arg in _NAMED_FUNCTIONS else "atom", arg)]
        if name in _ACCENTS:
            arg = self.argument()
            return [("atom", arg[:1] + _ACCENTS[name] + arg[1:])]
        if name == "mathcal":
            arg = self.argument()
            return [("atom", _CALLIGRAPHIC.get(arg, arg))]
        if name in ("lVert", "rVert", "Vert", "|"):
            return self.item("‖")
        if name in ("{", "}"):
            return [("open" if name == "{" else "close", name)]
        if name in ("_", "%", "&", "#", "$"):
            return [("atom", name)]
        if name in ("quad", "qquad"):
            return [("break", "\n")]
        if name in _THIN_SPACES:
            return [("space", " ")]
        if name in _IGNORED:
            return []
        return [("atom", name)]


_FACTOR = ("atom", "number", "close", "frac", "prime")


def _render(items: list[tuple[str, str]], *, top: bool) -> str:
    """Join the items: operators spaced, a product by juxtaposition made explicit with ``·``."""
    out = ""
    prev: str | None = None  # kind of the last item written
    gap = False  # white space in the source since it
    for kind, text in items:
        if kind == "space":
            gap = True
            continue
        if kind == "break":
            out = out.rstrip() + ("\n" if top else " ")
            prev, gap = None, False
            continue
        if kind == "op":
            if text == "−" and prev in (None, "open", "punct", "op", "slash"):
                out += "−"  # a sign: no space after it
                prev, gap = "unary", False
                continue
            out = out.rstrip() + f" {text} "
        elif kind == "punct":
            out = out.rstrip() + f"{text} "
        elif kind == "slash":
            out = out.rstrip() + "/"
        elif kind == "close" or kind == "prime":
            out = out.rstrip() + text
        else:  # atom, number, func, frac, open
            if prev in _FACTOR and kind in ("atom", "number", "func", "frac", "open"):
                product = gap or "frac" in (kind, prev) or kind == "func"
                if prev == "close" and kind != "open":
                    product = True  # (a + b)γ
                if kind == "open" and not gap:
                    product = prev == "frac"  # f(x): an application, not a product
                if prev == "number" and kind == "atom" and not gap:
                    product = False  # 2π
                if product:
                    out = out.rstrip() + " · "
            elif prev == "func" and gap:
                out += " "
            out += text
        prev, gap = kind, False
    lines = [" ".join(line.split()) for line in out.split("\n")]
    return "\n".join(line for line in lines if line)


def plain(latex: str) -> str:
    """``latex`` (math mode, without the ``$`` signs) as plain Unicode text."""
    parser = _Parser(latex)
    return _render(parser.items(None), top=True)


_DISPLAY = re.compile(r"\$\$(.+?)\$\$", re.DOTALL)
_INLINE = re.compile(r"\$([^$]+)\$")
_LITERAL = re.compile(r"``([^`]+)``")
_REFERENCE = re.compile(r"`([^`]+)`")
_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def text(paragraphs: str) -> str:
    """Docstring prose for a terminal: ``$$…$$`` and ``$…$`` math as plain text (a display on
    lines of its own), ````code````, ```name``` and ``:role:`target``` markup as their text."""

    def display(match: re.Match[str]) -> str:
        return plain(" ".join(match.group(1).split()))

    out = _DISPLAY.sub(display, paragraphs)
    out = _INLINE.sub(lambda m: plain(m.group(1)), out)
    out = _ROLE.sub(lambda m: m.group(1), out)
    out = _LITERAL.sub(lambda m: m.group(1), out)
    out = _REFERENCE.sub(lambda m: m.group(1), out)
    return "\n".join(line.rstrip() for line in out.strip("\n").splitlines())
