"""The public surface: ``microcall.__all__`` stays sorted and complete, the error tree stays drawn."""

from __future__ import annotations

import inspect
import re

import microcall
import microcall.errors


def test_all_is_sorted_and_unique() -> None:
    assert microcall.__all__ == sorted(set(microcall.__all__))


def test_every_name_in_all_exists() -> None:
    missing = [name for name in microcall.__all__ if not hasattr(microcall, name)]
    assert missing == []


def test_every_public_class_and_function_is_in_all() -> None:
    public = {
        name
        for name, value in vars(microcall).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and (value.__module__ == "microcall" or value.__module__.startswith("microcall."))
    }
    assert public - set(microcall.__all__) == set()


def test_errors_all_is_sorted_and_lists_every_exception() -> None:
    assert microcall.errors.__all__ == sorted(microcall.errors.__all__)
    assert set(microcall.errors.__all__) == set(exception_classes())


def exception_classes() -> dict[str, type[BaseException]]:
    return {
        name: value
        for name, value in vars(microcall.errors).items()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == "microcall.errors"
    }


def drawn_tree() -> dict[str, str | None]:
    """``{class name: parent drawn above it}`` from the literal block in the errors docstring."""
    doc = microcall.errors.__doc__ or ""
    _, marker, after = doc.partition("::\n")
    assert marker, "the errors docstring has no drawn tree"
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in after.splitlines():
        if not line.strip():
            continue
        if not line.startswith(" "):
            break  # the literal block ended
        match = re.match(r"(?P<prefix>[\s│├└─]*)(?P<name>\w+)", line)
        assert match is not None
        depth = len(match.group("prefix"))
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[match.group("name")] = stack[-1][1] if stack else None
        stack.append((depth, match.group("name")))
    return parents


def test_the_docstring_tree_draws_every_exception() -> None:
    tree = drawn_tree()
    assert set(tree) == set(exception_classes())


def test_the_docstring_tree_matches_the_class_hierarchy() -> None:
    classes = exception_classes()
    for name, parent in drawn_tree().items():
        if parent is None:
            assert name == "MicrocallError"
        else:
            assert classes[parent] in classes[name].__bases__, f"{name} is not a {parent}"


def test_every_call_error_is_raised_from_one_root() -> None:
    for exception in exception_classes().values():
        assert issubclass(exception, microcall.MicrocallError)
