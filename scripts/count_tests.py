#!/usr/bin/env python3
"""Count the collected tests and flag tests that cannot fail.

    python scripts/count_tests.py [--no-collect] [PATH ...]      (default: tests)

Prints the number of tests pytest collects, then one line per finding in the test files, read with
the AST (nothing is imported or run):

- `no assertion`: a test function with no `assert`, no `pytest.raises`/`pytest.warns` and no call to
  a helper that asserts (helpers are functions of the scanned tree, found by name, transitively);
- `returns before asserting`: a `return` in a test that comes before one of its assertions, so the
  cases that take it check nothing (a property test's `except Error: return` counts only when that
  handler is the whole check: add an assertion on the error, or state the property another way);
- `skip`: `pytest.skip`, `pytest.importorskip`, `pytest.xfail` or a skip/xfail mark;
- `cannot fail`: `assert` of a constant, or a comparison of an expression with itself.

Exit status 1 when anything is flagged, so CI can keep the suite honest.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAISING = {"raises", "warns", "deprecated_call"}  # pytest context managers that assert an outcome
SKIPPING = {"skip", "importorskip", "xfail", "skipif"}

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef


@dataclass(frozen=True)
class Finding:
    path: Path
    line: int
    test: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.test}: {self.problem}"


def called_name(call: ast.Call) -> str:
    """The last name of what is called: `check` for `check(x)` and `drive.check(x)`."""
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ""


def own_nodes(body: Sequence[ast.AST]) -> Iterator[ast.AST]:
    """The nodes of a function's body, not those of functions or classes nested in it."""
    stack: list[ast.AST] = list(reversed(body))
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        stack.extend(reversed(list(ast.iter_child_nodes(node))))


def is_pytest_attr(node: ast.AST, names: set[str]) -> bool:
    """`pytest.<name>` or `pytest.mark.<name>` (with or without a call)."""
    if isinstance(node, ast.Call):
        node = node.func
    if not isinstance(node, ast.Attribute) or node.attr not in names:
        return False
    base = node.value
    if isinstance(base, ast.Attribute) and base.attr == "mark":
        base = base.value
    return isinstance(base, ast.Name) and base.id == "pytest"


def assertion_lines(body: Sequence[ast.AST], asserting: set[str]) -> list[int]:
    """Lines where a body checks something: asserts, pytest.raises, calls of asserting helpers."""
    lines = []
    for node in own_nodes(body):
        if isinstance(node, ast.Assert):
            lines.append(node.lineno)
        elif isinstance(node, ast.Call) and (is_pytest_attr(node, RAISING) or called_name(node) in asserting):
            lines.append(node.lineno)
    return lines


def cannot_fail(node: ast.Assert) -> bool:
    test = node.test
    if isinstance(test, ast.Constant):
        return bool(test.value)
    if isinstance(test, ast.Compare) and len(test.comparators) == 1:
        if isinstance(test.ops[0], ast.Eq | ast.Is | ast.GtE | ast.LtE):
            return ast.dump(test.left) == ast.dump(test.comparators[0])
    return False


def functions(tree: ast.Module) -> Iterator[tuple[str, FunctionNode, bool]]:
    """(qualified name, node, is a test) for module functions and methods of classes."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node.name, node, node.name.startswith("test")
        elif isinstance(node, ast.ClassDef):
            test_class = node.name.startswith("Test")
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    is_test = test_class and item.name.startswith("test")
                    yield f"{node.name}.{item.name}", item, is_test


def asserting_helpers(trees: dict[Path, ast.Module]) -> set[str]:
    """Names of non-test functions that assert, directly or through another such helper."""
    helpers: dict[str, list[FunctionNode]] = {}
    for tree in trees.values():
        for _name, fn, is_test in functions(tree):
            if not is_test:
                helpers.setdefault(fn.name, []).append(fn)
        for node in ast.walk(tree):  # nested helpers (closures passed to a driver) count too
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("test"):
                helpers.setdefault(node.name, []).append(node)
    asserting: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, fns in helpers.items():
            if name not in asserting and any(assertion_lines(fn.body, asserting) for fn in fns):
                asserting.add(name)
                changed = True
    return asserting


def typed_handler(handler: ast.ExceptHandler) -> bool:
    """`except SomeError:` (not bare, not Exception): returning there checks the exception's type."""
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return all(isinstance(n, ast.Name | ast.Attribute) for n in names) and not any(
        isinstance(n, ast.Name) and n.id in ("Exception", "BaseException") for n in names
    )


class PathWalk:
    """Follows a test's statements, knowing on each path whether something was checked yet."""

    def __init__(self, asserting: set[str]) -> None:
        self.asserting = asserting
        self.early: list[int] = []  # lines of returns reached before any check on their path

    def block(self, stmts: list[ast.stmt], checked: bool) -> bool:
        for stmt in stmts:
            checked = self.stmt(stmt, checked)
        return checked

    def stmt(self, stmt: ast.stmt, checked: bool) -> bool:
        if isinstance(stmt, ast.Return):
            if not checked:
                self.early.append(stmt.lineno)
            return True  # nothing after it runs on this path
        if isinstance(stmt, ast.If):
            return self.block(stmt.body, checked) and self.block(stmt.orelse, checked)
        if isinstance(stmt, ast.For | ast.AsyncFor | ast.While):
            inner = self.block(stmt.body, checked)  # a loop that runs is taken to check what it checks
            return self.block(stmt.orelse, checked or inner)
        if isinstance(stmt, ast.With | ast.AsyncWith):
            raising = any(is_pytest_attr(item.context_expr, RAISING) for item in stmt.items)
            return self.block(stmt.body, checked or raising) or raising
        if isinstance(stmt, ast.Try):
            body = self.block(stmt.body, checked)
            for handler in stmt.handlers:
                self.block(handler.body, checked or typed_handler(handler))
            after = self.block(stmt.orelse, body)
            return self.block(stmt.finalbody, after)
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            return checked
        return checked or bool(assertion_lines([stmt], self.asserting))


def check_test(path: Path, name: str, fn: FunctionNode, asserting: set[str]) -> Iterator[Finding]:
    if not assertion_lines(fn.body, asserting):
        yield Finding(path, fn.lineno, name, "no assertion")
    else:
        walk = PathWalk(asserting)
        if not walk.block(fn.body, False):
            yield Finding(path, fn.lineno, name, "some paths check nothing")
        for line in walk.early:
            yield Finding(path, line, name, "returns before asserting")
    for deco in fn.decorator_list:
        if is_pytest_attr(deco, SKIPPING):
            yield Finding(path, deco.lineno, name, "skip")
    for node in own_nodes(fn.body):
        if isinstance(node, ast.Call) and is_pytest_attr(node, SKIPPING):
            yield Finding(path, node.lineno, name, "skip")
        elif isinstance(node, ast.Assert) and cannot_fail(node):
            yield Finding(path, node.lineno, name, "cannot fail")


def scan(paths: list[Path]) -> list[Finding]:
    files = sorted({f for p in paths for f in ([p] if p.is_file() else p.rglob("*.py"))})
    trees = {f: ast.parse(f.read_text(), filename=str(f)) for f in files}
    asserting = asserting_helpers(trees)
    findings: list[Finding] = []
    for path, tree in trees.items():
        if not path.name.startswith("test_"):
            continue
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        for name, fn, is_test in functions(tree):
            if is_test:
                findings.extend(check_test(shown, name, fn, asserting))
    return findings


def collected(paths: list[Path]) -> int:
    """The number of test ids pytest collects (parametrized cases count one each)."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *map(str, paths)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        sys.exit(f"count_tests: collection failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return sum(1 for line in out.stdout.splitlines() if "::" in line)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", type=Path, default=[ROOT / "tests"])
    ap.add_argument("--no-collect", action="store_true", help="only the AST scan, no pytest collection")
    args = ap.parse_args(argv)
    paths = [p.resolve() for p in args.paths]
    if not args.no_collect:
        print(f"collected tests: {collected(paths)}")
    findings = scan(paths)
    for finding in findings:
        print(finding)
    print(f"flagged: {len(findings)}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
