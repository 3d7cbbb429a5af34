"""The two sides of a failed `assert a == b`, read without assertion rewriting.

With pytest's assertion rewriting, `pytest_assertrepr_compare` hands the plugin both operands of
a failed `==`, and a side that is a traced output tells the optimizer the expected answer (a
labelled demo). Under `--assert=plain` (or in modules pytest does not rewrite) that hook never
fires, so the failing statement is parsed here and its two sides looked up in the frame's
local variables. Nothing of the user's is run: only names, constants, subscripts of plain
dicts, lists and tuples, and argument-free string methods such as `.strip()` are evaluated.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping

_STR_METHODS = frozenset({"strip", "lstrip", "rstrip", "lower", "upper", "casefold"})


class _Unsafe(Exception):
    pass


def compared_values(statement: str, local_names: Mapping[str, object]) -> tuple[object, object] | None:
    """The values of both sides of `assert left == right`, or None for any other statement."""
    try:
        tree = ast.parse(statement.strip())
    except SyntaxError:
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        return None
    test = tree.body[0].test
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return None
    try:
        return _value(test.left, local_names), _value(test.comparators[0], local_names)
    except _Unsafe:
        return None


def _value(node: ast.expr, names: Mapping[str, object]) -> object:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]
    if isinstance(node, ast.Subscript):
        container, index = _value(node.value, names), _value(node.slice, names)
        if type(container) in (dict, list, tuple):
            try:
                return container[index]  # type: ignore[index]
            except (KeyError, IndexError, TypeError):
                raise _Unsafe from None
    if isinstance(node, ast.Call) and not node.args and not node.keywords and isinstance(node.func, ast.Attribute):
        target = _value(node.func.value, names)
        if type(target) is str and node.func.attr in _STR_METHODS:
            return getattr(target, node.func.attr)()
    raise _Unsafe
