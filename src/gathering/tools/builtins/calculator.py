"""The calculator tool: `evaluate(expression)` computes arithmetic and nothing else.

Numbers, `+ - * / // % **`, unary `+`/`-`, parentheses and the functions in `FUNCTIONS`.
Anything else (names, attributes, strings, lambdas, comprehensions, other calls, `~`) is
refused as `InvalidInputError` before evaluation.

"X% of Y" (X a number) is `X * Y / 100`, where Y is the operand that follows, read the way
Python reads the operand of a unary minus: a power (`**` binds tighter) or anything in
parentheses, but not a sum or product. So "50% of 10 ** 2" is 50% of 100 (50), "15% of
2 ** 3" is 1.2, "10% of 200 + 5" is 20 + 5 (25), "2 * 15% of 200" is 2 * 30 (60), and
"10% of (200 + 5)" takes 10% of 205. It nests ("10% of 50% of 80" is 4) and may stand where
an operand may ("2 ** 50% of 2" is 2 ** 1).

>>> evaluate("(2 + 3) * 4")
20
>>> evaluate("15% of 2500")
375
>>> evaluate("round(sqrt(2), 3)")
1.414
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable
from typing import Any

import simpleeval

from gathering.errors import InvalidInputError

MAX_EXPRESSION_CHARS = 500
MAX_TERMS = 150  # numbers, operators and function calls in one expression
MAX_RESULT_BITS = 4000  # about 1,200 decimal digits, under Python's int-to-text limit
MAX_ROUND_DIGITS = 100

_HINT = (
    "write plain arithmetic: numbers, + - * / // % **, parentheses, "
    "'X% of Y', and the functions abs, round, min, max, sqrt, floor, ceil"
)
# "15% of" (a number, then "of" as a word): rewritten to "~", a unary operator, so that Python
# parses what follows with a unary operator's precedence; `_PercentOf` then turns each such
# `~Y` into `X * Y / 100`.
_PERCENT_OF = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*%\s*of(?![\w.])", re.IGNORECASE)
_NEWLINE = re.compile(r"\r\n|\r|\n")  # line ends as Python's tokenizer reads them
_FLOAT_EXACT_INT = 2**53


def _refuse(message: str, hint: str = _HINT) -> InvalidInputError:
    return InvalidInputError(message, hint=hint)


def _shown(text: str) -> str:
    return text if len(text) <= 200 else text[:200] + "…"


def _checked(value: object) -> int | float:
    """`value` if it is a real number of a sane size; `InvalidInputError` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        if isinstance(value, complex):
            raise _refuse("the result is not a real number (a negative number to a fraction?)")
        raise _refuse(f"only numbers can be computed, not {type(value).__name__}")
    if isinstance(value, int) and value.bit_length() > MAX_RESULT_BITS:
        raise _refuse("the result is too large", hint="use smaller numbers or exponents")
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            raise _refuse("the result is not a number (NaN)")
        raise _refuse("the result is too large", hint="use smaller numbers or exponents")
    return value


def _binary(function: Callable[[Any, Any], Any]) -> Callable[[Any, Any], int | float]:
    def checked(left: Any, right: Any) -> int | float:
        return _checked(function(left, right))

    return checked


def _multiply(left: Any, right: Any) -> int | float:
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_RESULT_BITS + 1:
            raise _refuse("the result is too large", hint="use smaller numbers")
    return _checked(left * right)


def _power(base: Any, exponent: Any) -> int | float:
    # Estimated before computing: 10 ** 1000000 is refused without being built.
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        if exponent * math.log2(abs(base)) > MAX_RESULT_BITS:
            raise _refuse("the result is too large", hint="use smaller numbers or exponents")
    return _checked(base**exponent)


def _round(number: Any, digits: Any = None) -> int | float:
    if digits is not None and (not isinstance(digits, int) or abs(digits) > MAX_ROUND_DIGITS):
        raise _refuse(f"round() takes a whole number of digits up to {MAX_ROUND_DIGITS}")
    return _checked(round(number, digits))


def _unary(function: Callable[[Any], Any]) -> Callable[[Any], int | float]:
    def checked(value: Any) -> int | float:
        return _checked(function(value))

    return checked


def _many(function: Callable[..., Any]) -> Callable[..., int | float]:
    def checked(*values: Any) -> int | float:
        return _checked(function(*values))

    return checked


OPERATORS: dict[type[ast.AST], Callable[..., int | float]] = {
    ast.Add: _binary(operator.add),
    ast.Sub: _binary(operator.sub),
    ast.Mult: _multiply,
    ast.Div: _binary(operator.truediv),
    ast.FloorDiv: _binary(operator.floordiv),
    ast.Mod: _binary(operator.mod),
    ast.Pow: _power,
    ast.USub: _unary(operator.neg),
    ast.UAdd: _unary(operator.pos),
}
FUNCTIONS: dict[str, Callable[..., int | float]] = {
    "abs": _unary(abs),
    "round": _round,
    "min": _many(min),
    "max": _many(max),
    "sqrt": _unary(math.sqrt),
    "floor": _unary(math.floor),
    "ceil": _unary(math.ceil),
}
_SYMBOLS: dict[type[ast.AST], str] = {ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^"}
_SYMBOLS |= {ast.LShift: "<<", ast.RShift: ">>", ast.MatMult: "@", ast.Not: "not", ast.Invert: "~"}
_NAMED_NODES: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access (`.name`)",
    ast.Lambda: "lambda",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a comprehension",
    ast.Subscript: "indexing (`[...]`)",
    ast.NamedExpr: "assignment (`:=`)",
    ast.JoinedStr: "text (an f-string)",
}


def _check_tree(tree: ast.Expression) -> None:
    """Refuse every node that is not plain arithmetic, with a message naming it."""
    terms = 0
    allowed_names = ", ".join(FUNCTIONS)
    for node in ast.walk(tree.body):
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool) or not isinstance(value, int | float):
                kind = "text" if isinstance(value, str | bytes) else repr(value)
                raise _refuse(f"only numbers are allowed, not {_shown(kind)}")
            _checked(value)
        elif isinstance(node, ast.BinOp | ast.UnaryOp):
            if type(node.op) not in OPERATORS:
                symbol = _SYMBOLS.get(type(node.op), type(node.op).__name__)
                raise _refuse(f"the operator {symbol} is not allowed")
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                raise _refuse("only the calculator's own functions can be called")
            if node.func.id not in FUNCTIONS:
                raise _refuse(
                    f"the function {_shown(node.func.id)!r} is not available",
                    hint=f"use one of {allowed_names}",
                )
            if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
                raise _refuse(f"{node.func.id}() takes plain numbers, without names or *")
        elif isinstance(node, ast.Name):
            if not isinstance(node.ctx, ast.Load) or node.id not in FUNCTIONS:
                raise _refuse(f"unknown name {_shown(node.id)!r}: only numbers can be computed")
        elif not isinstance(node, ast.operator | ast.unaryop | ast.expr_context):
            described = _NAMED_NODES.get(type(node), type(node).__name__)
            raise _refuse(f"{described} is not allowed in a calculation")
        terms += 1
    if terms > MAX_TERMS:
        raise _refuse(f"the expression has more than {MAX_TERMS} terms", hint="split it up")


def _mark_percents(text: str) -> tuple[str, dict[tuple[int, int], str]]:
    """`text` with each "X% of" replaced by "~", and X by where that "~" stands.

    The place is (line from 1, UTF-8 byte column), as `ast` gives a node's position.
    """
    pieces: list[str] = []
    percents: dict[tuple[int, int], str] = {}
    end = 0
    for match in _PERCENT_OF.finditer(text):
        pieces.append(text[end : match.start()])
        lines = _NEWLINE.split("".join(pieces))
        percents[(len(lines), len(lines[-1].encode("utf-8", "surrogatepass")))] = match.group(1)
        pieces.append("~")
        end = match.end()
    pieces.append(text[end:])
    return "".join(pieces), percents


class _PercentOf(ast.NodeTransformer):
    """Turns each `~Y` left by `_mark_percents` into `X * Y / 100`.

    A `~` of the user's own stands elsewhere: it is left for `_check_tree` to refuse.
    """

    def __init__(self, percents: dict[tuple[int, int], str]) -> None:
        self._percents = percents

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        percent = self._percents.get((node.lineno, node.col_offset))
        if percent is None or not isinstance(node.op, ast.Invert):
            return node
        value = float(percent) if "." in percent else int(percent)
        scaled = ast.BinOp(ast.Constant(value), ast.Mult(), node.operand)
        return ast.copy_location(ast.BinOp(scaled, ast.Div(), ast.Constant(100)), node)


def _evaluator() -> Any:
    """A simpleeval evaluator that knows only our operators, functions and node kinds."""
    evaluator = simpleeval.SimpleEval(operators=dict(OPERATORS), functions=dict(FUNCTIONS))
    evaluator.names = {}
    evaluator.ATTR_INDEX_FALLBACK = False
    allowed = (ast.BinOp, ast.UnaryOp, ast.Call, ast.Constant)
    evaluator.nodes = {kind: evaluator.nodes[kind] for kind in allowed}
    return evaluator


def evaluate(expression: str) -> int | float:
    """The value of an arithmetic expression such as "(2 + 3) * 4" or "15% of 2500".

    A float with no fractional part comes back as an int (10 / 2 gives 5).
    """
    if not isinstance(expression, str):
        raise _refuse("the expression must be text")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise _refuse(
            f"the expression is longer than {MAX_EXPRESSION_CHARS} characters",
            hint="split it into smaller calculations",
        )
    text = expression.strip()
    if not text:
        raise _refuse("the expression is empty")
    text, percents = _mark_percents(text)
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        raise _refuse(f"{_shown(expression)!r} is not a complete arithmetic expression") from None
    if percents:
        try:
            tree = _PercentOf(percents).visit(tree)
        except RecursionError:
            raise _refuse("the expression is nested too deeply", hint="split it up") from None
    _check_tree(tree)
    try:
        result = _evaluator().eval(text, previously_parsed=tree.body)
    except InvalidInputError:
        raise  # from our own checks: already says what is wrong
    except ZeroDivisionError:
        raise _refuse("division by zero", hint="check the divisor") from None
    except OverflowError:
        raise _refuse("the result is too large", hint="use smaller numbers") from None
    except RecursionError:
        raise _refuse("the expression is nested too deeply", hint="split it up") from None
    except (ValueError, TypeError) as exc:
        raise _refuse(f"cannot compute {_shown(expression)!r}: {_shown(str(exc))}") from None
    except simpleeval.InvalidExpression as exc:
        raise _refuse(f"cannot compute {_shown(expression)!r}: {_shown(str(exc))}") from None
    value = _checked(result)
    if isinstance(value, float) and value.is_integer() and abs(value) < _FLOAT_EXACT_INT:
        return int(value)
    return value
