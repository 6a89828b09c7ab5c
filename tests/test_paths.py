"""Owned-file patterns: validation, matching and overlap."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stretto.plans import paths


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        ("/etc/passwd", "absolute"),
        ("C:/x", "absolute"),
        ("../secret", "escapes the repository"),
        ("src/../../x", "escapes the repository"),
        ("~/x", "home directory"),
        ("a\\b", "backslash"),
        ("", "empty path"),
        (".", "repository root"),
        ("src/[ab", "unclosed '['"),
        ("src/[z-a]", "bad range"),
    ],
)
def test_bad_patterns_are_explained(pattern: str, fragment: str) -> None:
    problem = paths.problem(pattern)
    assert problem is not None
    assert fragment in problem


@pytest.mark.parametrize("pattern", ["src/a.py", "src/**", "docs/*.md", "a/../b", "./x/", "[ab]/c"])
def test_good_patterns_pass(pattern: str) -> None:
    assert paths.problem(pattern) is None


def test_normalize() -> None:
    assert paths.normalize("./src//api/") == "src/api/**"
    assert paths.normalize("a/../b/c") == "b/c"
    assert paths.normalize("src/**/") == "src/**"


@pytest.mark.parametrize(
    ("pattern", "path", "owned"),
    [
        ("src/api", "src/api/x.py", True),
        ("src/api", "src/api", True),
        ("src/api", "src/apix", False),
        ("src/*.py", "src/a.py", True),
        ("src/*.py", "src/x/a.py", False),
        ("src/**/*.py", "src/a.py", True),
        ("src/**/*.py", "src/x/y/a.py", True),
        ("**/*.md", "README.md", True),
        ("**/*.md", "docs/a/b.md", True),
        ("docs/*", "docs/guide/intro.md", True),
        ("test_[ab].py", "test_a.py", True),
        ("test_[!ab].py", "test_a.py", False),
        ("test_?.py", "test_c.py", True),
        ("src/a.py", "src/a.py/x", False),
        (".github", ".github/workflows/ci.yml", True),
        ("lib/v1.2/**", "lib/v1.2/x.js", True),
    ],
)
def test_owns(pattern: str, path: str, owned: bool) -> None:
    assert paths.owns(paths.normalize(pattern), path) is owned


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("src/a.py", "src/a.py", True),
        ("src/a.py", "src/b.py", False),
        ("src", "src/a.py", True),
        ("src/a.py", "src/a.pyc", False),
        ("src/*.py", "src/a.py", True),
        ("src/*.py", "src/a.txt", False),
        ("src/**", "src/deep/x/y.rs", True),
        ("**/*.md", "src/api.py", False),
        ("**/*.md", "docs/x.md", True),
        ("docs/*", "docs/a/b.md", True),
        ("a/[!b]x", "a/bx", False),
        ("a/[!b]x", "a/cx", True),
        ("a/*b", "a/c*", True),
        ("a/x*", "a/y*", False),
        ("**", "anything/at/all", True),
        ("tests/**/test_*.py", "tests/unit/test_x.py", True),
        ("tests/**/test_*.py", "tests/unit/conftest.py", False),
    ],
)
def test_overlaps(a: str, b: str, expected: bool) -> None:
    a, b = paths.normalize(a), paths.normalize(b)
    assert paths.overlaps(a, b) is expected
    assert paths.overlaps(b, a) is expected


_SEGMENTS = ["a", "b", "ab", "a.py", "b.py", "*", "*.py", "a*", "?", "[ab]", "**", "x"]
_PATHS = [
    "/".join(p)
    for n in (1, 2, 3)
    for p in itertools.product(["a", "b", "ab", "a.py", "b.py", "x", "c.md"], repeat=n)
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(_SEGMENTS), min_size=1, max_size=3),
    st.lists(st.sampled_from(_SEGMENTS), min_size=1, max_size=3),
)
def test_overlap_agrees_with_matching(a_parts: list[str], b_parts: list[str]) -> None:
    """If some concrete path is owned by both, overlaps() must say so (never too narrow)."""
    a, b = paths.normalize("/".join(a_parts)), paths.normalize("/".join(b_parts))
    witness = next((p for p in _PATHS if paths.owns(a, p) and paths.owns(b, p)), None)
    if witness is not None:
        assert paths.overlaps(a, b), (a, b, witness)


def test_any_overlap_names_the_pair() -> None:
    assert paths.any_overlap(("x.py", "src/api"), ("docs", "src/api/v1.py")) == (
        "src/api",
        "src/api/v1.py",
    )
    assert paths.any_overlap(("x.py",), ("y.py",)) is None


@pytest.mark.parametrize(
    ("patterns", "dirs"),
    [
        (["src/api/app.py", "src/api/**", "tests"], ("src/api", "tests")),
        (["src/api/app.py"], ("src/api",)),  # a file: its folder
        (["README.md", "*.toml"], ()),  # top-level files: cone mode always has them
        (["docs/", "src/*/x.py"], ("docs", "src")),  # up to the first glob
        (["lib/a", "lib", "lib/b/c.py"], ("lib",)),  # nested folders collapse
        (["**/*.py"], None),  # could be anywhere: a full checkout
        (["src/a.py", "*/x"], None),
        ([], ()),
    ],
)
def test_sparse_dirs_cover_every_owned_path(
    patterns: list[str], dirs: tuple[str, ...] | None
) -> None:
    assert paths.sparse_dirs(patterns) == dirs


def _in_cone(path: str, dirs: tuple[str, ...] | None) -> bool:
    """Whether a cone-mode sparse checkout of ``dirs`` holds ``path`` (git's rules)."""
    if dirs is None:
        return True
    parent = path.rpartition("/")[0]
    if not parent:
        return True  # top-level files
    if any(path.startswith(f"{d}/") for d in dirs):
        return True  # beneath a listed folder
    return any(d.startswith(f"{parent}/") for d in dirs)  # directly inside a parent of one


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.sampled_from(_SEGMENTS), min_size=1, max_size=3), max_size=3))
def test_sparse_dirs_never_leave_an_owned_path_out(patterns: list[list[str]]) -> None:
    owned = [paths.normalize("/".join(parts)) for parts in patterns]
    dirs = paths.sparse_dirs(owned)
    for path in _PATHS:
        if any(paths.owns(pattern, path) for pattern in owned):
            assert _in_cone(path, dirs), (owned, dirs, path)
