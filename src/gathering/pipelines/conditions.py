"""Conditions: small expressions over a run's `input` and the `outputs` of its nodes, e.g.
`outputs.sort.priority == "high" and len(input.tags) > 0`.

An expression is Python syntax restricted to literals, the names `input`, `outputs`, `true`,
`false` and `null`, attribute and item access (no name starting with `_`), arithmetic,
comparisons, `and`/`or`/`not`, `in`, conditional expressions and the functions in
`FUNCTIONS`. Nothing else parses: no other names, no other calls, no lambdas or
comprehensions, so an expression cannot reach Python's objects (never `eval`).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

from simpleeval import EvalWithCompoundTypes, InvalidExpression

from gathering.errors import InvalidInputError

MAX_EXPRESSION_CHARS = 2_000
MAX_NODES = 200  # syntax nodes in one expression
NAMES = frozenset({"input", "outputs", "true", "false", "null"})
FUNCTIONS = frozenset({"len", "str", "int", "float", "bool", "lower", "upper", "contains"})
_ALLOWED = (
    ast.Expression,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.USub,
    ast.UAdd,
    ast.BinOp,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.FloorDiv,
    ast.Mod,
    ast.Compare,
    ast.Eq,
    ast.NotEq,
    ast.Lt,
    ast.LtE,
    ast.Gt,
    ast.GtE,
    ast.In,
    ast.NotIn,
    ast.IfExp,
    ast.Constant,
    ast.List,
    ast.Tuple,
    ast.Name,
    ast.Load,
    ast.Attribute,
    ast.Subscript,
    ast.Call,
)


def check_expression(expression: str) -> str:
    """`expression` when it is a condition this module allows, else `ValueError` saying what
    is not allowed."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"an expression has at most {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not an expression: {exc.msg}") from None
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_NODES:
        raise ValueError(f"an expression has at most {MAX_NODES} parts")
    for node in nodes:
        if not isinstance(node, _ALLOWED):
            raise ValueError(f"{type(node).__name__} is not allowed in a condition")
        if isinstance(node, ast.Name) and node.id not in NAMES | FUNCTIONS:
            raise ValueError(f"unknown name {node.id!r}: use input, outputs, true, false or null")
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise ValueError(f"attribute {node.attr!r} is not allowed")
        if isinstance(node, ast.Call) and (
            not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords
        ):
            raise ValueError(f"only these functions may be called: {', '.join(sorted(FUNCTIONS))}")
        if isinstance(node, ast.Name) and node.id in FUNCTIONS and not _is_called(node, nodes):
            raise ValueError(f"{node.id} is a function: call it, e.g. {node.id}(...)")
    return expression


def _is_called(name: ast.Name, nodes: list[ast.AST]) -> bool:
    return any(isinstance(n, ast.Call) and n.func is name for n in nodes)


def _contains(container: object, item: object) -> bool:
    return item in container  # type: ignore[operator]


_FUNCTIONS: dict[str, Any] = {
    "len": len,
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "lower": lambda text: str(text).lower(),
    "upper": lambda text: str(text).upper(),
    "contains": _contains,
}


def evaluate(expression: str, input: Mapping[str, Any], outputs: Mapping[str, Any]) -> Any:
    """The value of `expression` (checked by `check_expression` first) over a run's `input`
    and its nodes' `outputs` (`outputs.sort.priority` reads a key); `InvalidInputError`
    saying why when it cannot be evaluated (a missing key, a wrong type)."""
    check_expression(expression)
    names = {"input": input, "outputs": outputs, "true": True, "false": False, "null": None}
    evaluator = EvalWithCompoundTypes(names=names, functions=_FUNCTIONS)
    try:
        return evaluator.eval(expression.strip())
    except (InvalidExpression, ArithmeticError, LookupError, TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"condition {expression!r} could not be evaluated: {exc}",
            hint="check the names it reads (input.<key>, outputs.<node id>.<key>)",
        ) from None
