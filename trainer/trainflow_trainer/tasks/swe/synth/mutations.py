"""SWE-smith-style procedural bugs: libcst modifiers that change one site of one function.

A mutation is (file, function, kind, site): the site-th place inside the function where the kind applies,
counted in source order, so it is reproducible and two mutations of different functions of a file compose
(combined bugs). Kinds:

  change_operator      + ↔ -, * ↔ /, // ↔ %, & ↔ |, << ↔ >>, ** → *, < ↔ <=, > ↔ >=, == ↔ !=, is ↔ is not,
                       in ↔ not in, and ↔ or
  flip_operator        swap the operands of a comparison or a non-commutative binary operation (a < b → b < a)
  remove_condition     drop an if statement (and its branches)
  remove_loop          drop a for or while loop
  remove_assignment    drop an assignment statement
  invert_if            swap an if's branches (with an else), or negate its test (without)
  change_constant      an integer n → n + 1, True ↔ False
  shuffle_statements   swap two adjacent statements of the function's body

Only functions of cyclomatic complexity ≥ MIN_COMPLEXITY are mutated (SWE-smith's rule: simple functions
give trivial bugs), and a mutant that no longer compiles is dropped.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass

import libcst as cst

KINDS = (
    "change_operator",
    "flip_operator",
    "remove_condition",
    "remove_loop",
    "remove_assignment",
    "invert_if",
    "change_constant",
    "shuffle_statements",
)
MIN_COMPLEXITY = 3

BINARY_SWAPS: dict[type[cst.BaseBinaryOp], type[cst.BaseBinaryOp]] = {
    cst.Add: cst.Subtract,
    cst.Subtract: cst.Add,
    cst.Multiply: cst.Divide,
    cst.Divide: cst.Multiply,
    cst.FloorDivide: cst.Modulo,
    cst.Modulo: cst.FloorDivide,
    cst.BitAnd: cst.BitOr,
    cst.BitOr: cst.BitAnd,
    cst.LeftShift: cst.RightShift,
    cst.RightShift: cst.LeftShift,
    cst.Power: cst.Multiply,
}
COMPARE_SWAPS: dict[type[cst.BaseCompOp], type[cst.BaseCompOp]] = {
    cst.LessThan: cst.LessThanEqual,
    cst.LessThanEqual: cst.LessThan,
    cst.GreaterThan: cst.GreaterThanEqual,
    cst.GreaterThanEqual: cst.GreaterThan,
    cst.Equal: cst.NotEqual,
    cst.NotEqual: cst.Equal,
    cst.Is: cst.IsNot,
    cst.IsNot: cst.Is,
    cst.In: cst.NotIn,
    cst.NotIn: cst.In,
}
FLIPPABLE_COMPARE = (cst.LessThan, cst.LessThanEqual, cst.GreaterThan, cst.GreaterThanEqual)
NON_COMMUTATIVE = (cst.Subtract, cst.Divide, cst.FloorDivide, cst.Modulo, cst.Power, cst.LeftShift, cst.RightShift)


@dataclass(frozen=True)
class Mutation:
    path: str  # the file, relative to the tree
    function: str  # qualified name: Class.method or function
    kind: str
    site: int

    @property
    def key(self) -> str:
        return f"{self.path}:{self.function}:{self.kind}:{self.site}"


def _ws(op: cst.CSTNode, new: type) -> cst.CSTNode:
    """`new` with the whitespace of `op` (the two-word operators keep their default inner space)."""
    kwargs = {}
    for attr in ("whitespace_before", "whitespace_after"):
        if hasattr(op, attr):
            kwargs[attr] = getattr(op, attr)
    return new(**kwargs)


class _Mutator(cst.CSTTransformer):
    """Counts the sites of `kind` inside function `target` and changes the one numbered `site` (None: count only)."""

    def __init__(self, target: str | None, kind: str, site: int | None):
        """target None: count the sites of every function at once (`counts`), changing nothing."""
        super().__init__()
        self.target, self.kind, self.site = target, kind, site
        self.stack: list[str] = []
        self.count = 0
        self.counts: dict[str, int] = {}
        self.applied = False

    # -- where we are ------------------------------------------------------------------------------------

    def _inside(self) -> bool:
        if self.target is None:
            return bool(self.stack)
        qual = ".".join(self.stack)
        return qual == self.target or qual.startswith(self.target + ".")

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        self.stack.append(node.name.value)
        return True

    def leave_ClassDef(self, original: cst.ClassDef, updated: cst.ClassDef) -> cst.ClassDef:
        self.stack.pop()
        return updated

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        self.stack.append(node.name.value)
        return True

    def leave_FunctionDef(self, original: cst.FunctionDef, updated: cst.FunctionDef) -> cst.FunctionDef:
        if self.kind == "shuffle_statements" and (self.target is None or ".".join(self.stack) == self.target):
            updated = self._shuffle(updated)
        self.stack.pop()
        return updated

    def _hit(self) -> bool:
        """Counts one site; whether it is the one to change."""
        if self.target is None:  # counting: the site belongs to every enclosing function
            for i in range(1, len(self.stack) + 1):
                q = ".".join(self.stack[:i])
                self.counts[q] = self.counts.get(q, 0) + 1
            return False
        n = self.count
        self.count += 1
        if self.site is not None and n == self.site:
            self.applied = True
            return True
        return False

    # -- the kinds ---------------------------------------------------------------------------------------

    def leave_BinaryOperation(self, original: cst.BinaryOperation, updated: cst.BinaryOperation) -> cst.BaseExpression:
        if not self._inside():
            return updated
        if self.kind == "change_operator" and type(updated.operator) in BINARY_SWAPS and self._hit():
            return updated.with_changes(operator=_ws(updated.operator, BINARY_SWAPS[type(updated.operator)]))
        if self.kind == "flip_operator" and isinstance(updated.operator, NON_COMMUTATIVE) and self._hit():
            return updated.with_changes(left=updated.right, right=updated.left)
        return updated

    def leave_ComparisonTarget(
        self, original: cst.ComparisonTarget, updated: cst.ComparisonTarget
    ) -> cst.ComparisonTarget:
        if self._inside() and self.kind == "change_operator" and type(updated.operator) in COMPARE_SWAPS:
            if self._hit():
                return updated.with_changes(operator=_ws(updated.operator, COMPARE_SWAPS[type(updated.operator)]))
        return updated

    def leave_Comparison(self, original: cst.Comparison, updated: cst.Comparison) -> cst.BaseExpression:
        if not (self._inside() and self.kind == "flip_operator" and len(updated.comparisons) == 1):
            return updated
        (ct,) = updated.comparisons
        if isinstance(ct.operator, FLIPPABLE_COMPARE) and self._hit():
            return updated.with_changes(left=ct.comparator, comparisons=[ct.with_changes(comparator=updated.left)])
        return updated

    def leave_BooleanOperation(
        self, original: cst.BooleanOperation, updated: cst.BooleanOperation
    ) -> cst.BaseExpression:
        if self._inside() and self.kind == "change_operator" and self._hit():
            new = cst.Or if isinstance(updated.operator, cst.And) else cst.And
            return updated.with_changes(operator=_ws(updated.operator, new))
        return updated

    def leave_If(self, original: cst.If, updated: cst.If) -> cst.BaseStatement | cst.RemovalSentinel:
        if not self._inside():
            return updated
        if self.kind == "remove_condition" and self._hit():
            return cst.RemoveFromParent()
        if self.kind == "invert_if" and self._hit():
            if isinstance(updated.orelse, cst.Else):
                return updated.with_changes(body=updated.orelse.body, orelse=cst.Else(body=updated.body))
            test = cst.UnaryOperation(
                operator=cst.Not(),
                expression=updated.test.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()]),
            )
            return updated.with_changes(test=test)
        return updated

    def leave_For(self, original: cst.For, updated: cst.For) -> cst.BaseStatement | cst.RemovalSentinel:
        if self._inside() and self.kind == "remove_loop" and self._hit():
            return cst.RemoveFromParent()
        return updated

    def leave_While(self, original: cst.While, updated: cst.While) -> cst.BaseStatement | cst.RemovalSentinel:
        if self._inside() and self.kind == "remove_loop" and self._hit():
            return cst.RemoveFromParent()
        return updated

    def leave_SimpleStatementLine(
        self, original: cst.SimpleStatementLine, updated: cst.SimpleStatementLine
    ) -> cst.BaseStatement | cst.RemovalSentinel:
        if not (self._inside() and self.kind == "remove_assignment" and len(updated.body) == 1):
            return updated
        if isinstance(updated.body[0], (cst.Assign, cst.AugAssign, cst.AnnAssign)) and self._hit():
            return cst.RemoveFromParent()
        return updated

    def leave_Integer(self, original: cst.Integer, updated: cst.Integer) -> cst.BaseExpression:
        if self._inside() and self.kind == "change_constant" and self._hit():
            try:
                return cst.Integer(value=str(int(updated.value, 0) + 1))
            except ValueError:
                return updated
        return updated

    def leave_Name(self, original: cst.Name, updated: cst.Name) -> cst.BaseExpression:
        if self._inside() and self.kind == "change_constant" and updated.value in ("True", "False") and self._hit():
            return updated.with_changes(value="False" if updated.value == "True" else "True")
        return updated

    def _shuffle(self, fn: cst.FunctionDef) -> cst.FunctionDef:
        if not isinstance(fn.body, cst.IndentedBlock):
            return fn
        body = list(fn.body.body)
        start = 1 if body and _is_docstring(body[0]) else 0
        for i in range(start, len(body) - 1):
            if body[i].deep_equals(body[i + 1]):
                continue
            if self.target is None:  # shuffles count for the function itself only
                q = ".".join(self.stack)
                self.counts[q] = self.counts.get(q, 0) + 1
                continue
            if self._hit():
                body[i], body[i + 1] = body[i + 1], body[i]
                return fn.with_changes(body=fn.body.with_changes(body=body))
        return fn


def _is_docstring(stmt: cst.BaseStatement) -> bool:
    return (
        isinstance(stmt, cst.SimpleStatementLine)
        and len(stmt.body) == 1
        and isinstance(stmt.body[0], cst.Expr)
        and isinstance(stmt.body[0].value, (cst.SimpleString, cst.ConcatenatedString))
    )


class _Functions(cst.CSTVisitor):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.found: list[tuple[str, cst.FunctionDef]] = []

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        self.stack.append(node.name.value)
        return True

    def leave_ClassDef(self, original: cst.ClassDef) -> None:
        self.stack.pop()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        self.stack.append(node.name.value)
        self.found.append((".".join(self.stack), node))
        return True

    def leave_FunctionDef(self, original: cst.FunctionDef) -> None:
        self.stack.pop()


class _Complexity(cst.CSTVisitor):
    def __init__(self) -> None:
        super().__init__()
        self.value = 1

    def visit_If(self, node: cst.If) -> None:
        self.value += 1

    def visit_For(self, node: cst.For) -> None:
        self.value += 1

    def visit_While(self, node: cst.While) -> None:
        self.value += 1

    def visit_ExceptHandler(self, node: cst.ExceptHandler) -> None:
        self.value += 1

    def visit_BooleanOperation(self, node: cst.BooleanOperation) -> None:
        self.value += 1

    def visit_IfExp(self, node: cst.IfExp) -> None:
        self.value += 1

    def visit_CompFor(self, node: cst.CompFor) -> None:
        self.value += 1


def complexity(fn: cst.FunctionDef) -> int:
    v = _Complexity()
    fn.visit(v)
    return v.value


def functions(module: cst.Module, min_complexity: int = MIN_COMPLEXITY) -> list[str]:
    """Qualified names of the module's functions and methods complex enough to mutate (unique names only)."""
    v = _Functions()
    module.visit(v)
    names = [q for q, _ in v.found]
    return [q for q, fn in v.found if names.count(q) == 1 and complexity(fn) >= min_complexity]


def count_sites(module: cst.Module, function: str, kind: str) -> int:
    m = _Mutator(function, kind, None)
    module.visit(m)
    return m.count


def sites(path: str, source: str, min_complexity: int = MIN_COMPLEXITY) -> Iterator[tuple[Mutation, int]]:
    """Every (function, kind) of a file with its number of sites: (Mutation with site 0, count)."""
    try:
        module = cst.parse_module(source)
    except cst.ParserSyntaxError:
        return
    fns = functions(module, min_complexity)
    for kind in KINDS:
        m = _Mutator(None, kind, None)
        module.visit(m)
        for fn in fns:
            if m.counts.get(fn):
                yield Mutation(path, fn, kind, 0), m.counts[fn]


def apply(source: str, mutation: Mutation) -> str | None:
    """The source with the mutation applied; None when it does not apply or the result does not compile."""
    module = cst.parse_module(source)
    m = _Mutator(mutation.function, mutation.kind, mutation.site)
    new = module.visit(m)
    if not m.applied:
        return None
    code = new.code
    if code == source:
        return None
    try:
        compile(code, mutation.path, "exec")
    except (SyntaxError, ValueError):
        return None
    return code


def unified_diff(path: str, before: str, after: str) -> str:
    """A git-style diff of one file (what `git apply -p1` takes)."""
    body = "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True), f"a/{path}", f"b/{path}"))
    return f"diff --git a/{path} b/{path}\n{body}" if body else ""
