"""A rule's ``when:`` CEL expression: compiled once at load, evaluated against one request.

Owns the activation the expression sees — subject, groups, server, kind, name, tool, args,
annotations, now — and the mapping of cel-python errors to ``CelEvaluationError``, which the
engine turns into a deny (fail closed). Uses celpy's interpreted runner (see docs/policy.md for cost).
"""

from __future__ import annotations

from typing import Any, ClassVar

import celpy
import lark
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError

from bastion.policy.conditions import Truth, effective_annotations
from bastion.policy.model import Kind, PolicyRequest

_ENVIRONMENT = celpy.Environment()
VARIABLES = frozenset({"subject", "groups", "server", "kind", "name", "tool", "args", "annotations", "now"})
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
"""Names a ``when:`` expression may read; anything else is a load-time error."""


class CelEvaluationError(Exception):
    """Raised when a ``when:`` expression fails at run time or yields a non-boolean."""


class CelCompileError(Exception):
    """Raised when a ``when:`` expression does not parse or names an unknown variable."""


class CelCondition:
    """A rule's ``when:``; UNKNOWN when it reads ``annotations`` the engine may not trust."""

    __slots__ = ("_program", "_reads_annotations", "label")
    per_call: ClassVar[bool] = True

    def __init__(self, source: str) -> None:
        try:
            tree = _ENVIRONMENT.compile(source)
        except CELParseError as exc:
            raise CelCompileError(f"CEL does not parse: {exc.args[0] if exc.args else exc}") from exc
        identifiers = {token.value for token in tree.scan_values(_is_identifier)}
        roots = _root_identifiers(tree)
        unknown = sorted(roots - VARIABLES)
        if unknown:
            raise CelCompileError(f"CEL reads unknown variable(s) {unknown}; available: {sorted(VARIABLES)}")
        self.label = f"when {source!r}"
        self._program = _ENVIRONMENT.program(tree)
        self._reads_annotations = "annotations" in identifiers

    def test(self, request: PolicyRequest) -> Truth:
        """Evaluate the expression.

        Raises:
            CelEvaluationError: evaluation failed or the result is not a boolean.
        """
        if self._reads_annotations and (not request.upstream_trusted or request.annotations is None):
            return Truth.UNKNOWN
        try:
            result = self._program.evaluate(activation(request))
        except Exception as exc:  # celpy raises CELEvalError and, on some inputs, bare Python errors
            raise CelEvaluationError(_describe(exc)) from exc
        if not isinstance(result, celtypes.BoolType):
            raise CelEvaluationError(f"expression returned {type(result).__name__}, not bool")
        return Truth.TRUE if result else Truth.FALSE

    def observed(self, request: PolicyRequest) -> str:
        return "the request's variables"


def activation(request: PolicyRequest) -> dict[str, Any]:
    """The CEL variables for ``request``; annotations are the effective ones, or {} when unknown."""
    annotations = effective_annotations(request.annotations) if request.annotations is not None else {}
    values = json_to_cel({
        "subject": request.subject,
        "groups": sorted(request.groups),
        "server": request.server,
        "kind": request.kind.value,
        "name": request.name,
        "tool": request.name if request.kind is Kind.TOOL else "",
        "args": dict(request.args),
        "annotations": annotations,
    })
    if not isinstance(values, celtypes.MapType):
        raise CelEvaluationError("activation is not a map")
    return {**{str(key): value for key, value in values.items()}, "now": celtypes.TimestampType(request.now)}


def _is_identifier(token: Any) -> bool:
    return isinstance(token, lark.Token) and token.type == "IDENT"


def _root_identifiers(tree: lark.Tree[Any]) -> set[str]:
    """Free variables: identifiers in ``primary`` position, minus macro-bound ones (``x`` in ``exists(x, ...)``)."""
    roots: set[str] = set()
    bound: set[str] = set()
    for node in tree.iter_subtrees():
        if node.data == "primary" and node.children:
            child = node.children[0]
            if isinstance(child, lark.Tree) and child.data == "ident" and child.children:
                roots.add(str(child.children[0]))
        elif node.data == "member_dot_arg" and len(node.children) == 3 and str(node.children[1]) in _MACROS:
            arguments = node.children[2]
            if isinstance(arguments, lark.Tree) and arguments.children:
                bound |= _root_identifiers_of(arguments.children[0])
    return roots - bound


def _root_identifiers_of(node: Any) -> set[str]:
    return _root_identifiers(node) if isinstance(node, lark.Tree) else set()


def _describe(exc: Exception) -> str:
    if isinstance(exc, CELEvalError) and exc.args:
        return str(exc.args[0])
    return type(exc).__name__
