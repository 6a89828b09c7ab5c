"""Owned-file patterns: validation, matching, and overlap between two patterns (pure).

A task owns a list of patterns relative to the repository root. The syntax is a small glob:

* ``*`` matches any run of characters inside one path segment, ``?`` one character,
  ``[abc]`` / ``[a-z]`` / ``[!abc]`` one character from (or not from) a set;
* a segment that is exactly ``**`` matches any number of segments, including none;
* a pattern whose last segment has an extension (``api.py``, ``*.md``, ``test_*.py``) names
  files and owns exactly what it matches; any other pattern also owns everything beneath what it
  matches, so ``src/api`` owns ``src/api/x.py``, ``docs/*`` owns ``docs/guide/intro.md`` and
  ``.github`` owns the whole folder. A trailing ``/`` (``lib/v1.2/``) always means a directory.
  Being generous is the safe side: a lease that is too wide only serializes work, one that is
  too narrow lets two agents collide.

:func:`overlaps` decides whether some path could be owned by both patterns, which is exactly when
two tasks must not run at once. It works on the patterns themselves (no file system), so it also
covers files that do not exist yet.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

_GLOB_CHARS = frozenset("*?[")
#: The pattern that owns the whole repository.
EVERYTHING_PATTERN = "**"


@dataclass(frozen=True, slots=True)
class _Char:
    """One character position of a segment glob: a literal, '?' or a set."""

    chars: frozenset[str] | None  # None: any character
    negated: bool = False

    def admits(self, other: _Char) -> bool:
        """Whether some single character matches both positions."""
        if self.chars is None or other.chars is None:
            if self.chars is None and other.chars is None:
                return True
            known = self if self.chars is not None else other
            # A negated set still admits infinitely many characters; a plain set admits its own.
            return known.negated or bool(known.chars)
        if not self.negated and not other.negated:
            return not self.chars.isdisjoint(other.chars)
        if self.negated and other.negated:
            return True
        plain, neg = (self, other) if not self.negated else (other, self)
        assert plain.chars is not None and neg.chars is not None
        return bool(plain.chars - neg.chars)


_STAR = "*"
_Token = _Char | str  # str is only ever _STAR


def problem(pattern: str) -> str | None:
    """Say what is wrong with an owned-file pattern, or None if it is usable.

    Patterns must be relative to the repository root and stay inside it.
    """
    if not pattern.strip():
        return "empty path; give a file, directory or glob relative to the repository root"
    if "\\" in pattern:
        return f"'{pattern}' contains a backslash; use '/' as the separator"
    if pattern.startswith("/") or re.match(r"^[A-Za-z]:", pattern):
        return (
            f"'{pattern}' is absolute; owned files are relative to the repository root "
            f"(e.g. '{pattern.lstrip('/') or 'src/'}')"
        )
    if pattern.startswith("~"):
        return f"'{pattern}' points into a home directory; owned files must be inside the repo"
    depth = 0
    for segment in pattern.split("/"):
        if segment == "..":
            depth -= 1
            if depth < 0:
                return (
                    f"'{pattern}' escapes the repository with '..'; owned files must be inside it"
                )
        elif segment not in ("", "."):
            depth += 1
    if depth == 0 and normalize(pattern) == "":
        return f"'{pattern}' names the repository root; leave 'files' out to own everything"
    if "[" in pattern:  # only a character set can be malformed
        try:
            _segments(normalize(pattern))
        except ValueError as error:
            return f"'{pattern}': {error}"
    return None


def normalize(pattern: str) -> str:
    """Canonical form: no './' or empty segments, '..' resolved, a trailing '/' made '/**'."""
    directory = pattern.endswith("/")
    out: list[str] = []
    for segment in pattern.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    if directory and out and out[-1] != "**":
        out.append("**")
    return "/".join(out)


def _names_files(last_segment: str) -> bool:
    """Whether a last segment such as 'api.py' or '*.md' names files rather than a folder."""
    return "." in last_segment[1:] and last_segment != "**"


def is_literal(pattern: str) -> bool:
    """Whether the pattern has no glob characters."""
    return _GLOB_CHARS.isdisjoint(pattern)


def _parse_segment(segment: str) -> tuple[_Token, ...]:
    tokens: list[_Token] = []
    i = 0
    while i < len(segment):
        c = segment[i]
        if c == "*":
            if not tokens or tokens[-1] != _STAR:
                tokens.append(_STAR)
            i += 1
        elif c == "?":
            tokens.append(_ANY_CHAR)
            i += 1
        elif c == "[":
            k = i + 1
            if segment[k : k + 1] in ("!", "^"):
                k += 1
            if segment[k : k + 1] == "]":
                k += 1  # a leading ']' is a literal member of the set
            end = segment.find("]", k)
            if end == -1:
                raise ValueError("unclosed '[' in a character set; close it with ']'")
            body = segment[i + 1 : end]
            negated = body[:1] in ("!", "^")
            if negated:
                body = body[1:]
            chars: set[str] = set()
            j = 0
            while j < len(body):
                if j + 2 < len(body) and body[j + 1] == "-":
                    lo, hi = body[j], body[j + 2]
                    if ord(lo) > ord(hi):
                        raise ValueError(
                            f"bad range '{lo}-{hi}' in a character set; write it from low to "
                            f"high, e.g. '[{hi}-{lo}]'"
                        )
                    chars.update(chr(k) for k in range(ord(lo), ord(hi) + 1))
                    j += 3
                else:
                    chars.add(body[j])
                    j += 1
            tokens.append(_Char(frozenset(chars), negated))
            i = end + 1
        else:
            tokens.append(_literal_char(c))
            i += 1
    return tuple(tokens)


_ANY_CHAR = _Char(None)


@lru_cache(maxsize=1024)
def _literal_char(c: str) -> _Char:
    """The position that matches exactly ``c`` (shared: parsing long names stays cheap)."""
    return _Char(frozenset(c))


_Segment = tuple[_Token, ...] | None  # None stands for '**'


@lru_cache(maxsize=65536)
def _segments(pattern: str) -> tuple[_Segment, ...]:
    """Parse a normalized pattern; a trailing '**' is implied unless it names files."""
    parsed: list[_Segment] = []
    raw = pattern.split("/") if pattern else []
    for segment in raw:
        if segment == "**":
            if not parsed or parsed[-1] is not None:
                parsed.append(None)
        else:
            parsed.append(_parse_segment(segment))
    if not parsed or (parsed[-1] is not None and not _names_files(raw[-1])):
        parsed.append(None)
    return tuple(parsed)


def _tokens_intersect(a: tuple[_Token, ...], b: tuple[_Token, ...]) -> bool:
    """Whether some string matches both segment globs (classic two-glob DP)."""
    memo: dict[tuple[int, int], bool] = {}

    def go(i: int, j: int) -> bool:
        key = (i, j)
        if key in memo:
            return memo[key]
        if i == len(a) and j == len(b):
            result = True
        elif i < len(a) and a[i] == _STAR:
            result = go(i + 1, j) or (j < len(b) and go(i, j + 1))
        elif j < len(b) and b[j] == _STAR:
            result = go(i, j + 1) or (i < len(a) and go(i + 1, j))
        elif i < len(a) and j < len(b):
            ta, tb = a[i], b[j]
            assert isinstance(ta, _Char) and isinstance(tb, _Char)
            result = ta.admits(tb) and go(i + 1, j + 1)
        else:
            result = False
        memo[key] = result
        return result

    return go(0, 0)


def _segments_intersect(a: tuple[_Segment, ...], b: tuple[_Segment, ...]) -> bool:
    """Whether some path matches both segment sequences ('**' = any number of segments)."""
    memo: dict[tuple[int, int], bool] = {}

    def go(i: int, j: int) -> bool:
        key = (i, j)
        if key in memo:
            return memo[key]
        if i == len(a) and j == len(b):
            result = True
        elif i < len(a) and a[i] is None:
            result = go(i + 1, j) or (j < len(b) and go(i, j + 1))
        elif j < len(b) and b[j] is None:
            result = go(i, j + 1) or (i < len(a) and go(i + 1, j))
        elif i < len(a) and j < len(b):
            sa, sb = a[i], b[j]
            assert sa is not None and sb is not None
            # A path segment is never empty, so two segment globs must share a non-empty string;
            # both only match the empty string when both are empty, which parsing never yields.
            result = _tokens_intersect(sa, sb) and go(i + 1, j + 1)
        else:
            result = False
        memo[key] = result
        return result

    return go(0, 0)


@lru_cache(maxsize=262144)
def overlaps(a: str, b: str) -> bool:
    """Whether some path is owned by both normalized patterns ``a`` and ``b``."""
    if a == b:
        return True
    a_literal, b_literal = is_literal(a), is_literal(b)
    if a_literal and b_literal:
        # Literal paths overlap when equal, or when one is a folder holding the other.
        short, long = (a, b) if len(a) <= len(b) else (b, a)
        return (
            long.startswith(short)
            and long[len(short) : len(short) + 1] == "/"
            and not _names_files(short.rsplit("/", 1)[-1])
        )
    # A literal that names a file owns that one path: the other pattern must match it.
    if a_literal and _names_files(a.rsplit("/", 1)[-1]):
        return _matches(_segments(b), a.split("/"), None, _segment_matches)
    if b_literal and _names_files(b.rsplit("/", 1)[-1]):
        return _matches(_segments(a), b.split("/"), None, _segment_matches)
    return _segments_intersect(_segments(a), _segments(b))


def _char_matches(token: _Char, char: str) -> bool:
    return token.chars is None or (char in token.chars) != token.negated


def _segment_matches(tokens: tuple[_Token, ...], name: str) -> bool:
    return _matches(tokens, name, _STAR, _char_matches)


def _matches(
    pattern: Sequence[Any], items: Sequence[str], wildcard: object, one: Callable[[Any, str], bool]
) -> bool:
    """Whether ``items`` match ``pattern`` (classic wildcard matching, linear in practice).

    ``wildcard`` (``*`` among a segment's characters, ``**`` among segments) matches any run of
    items; any other element matches exactly one item, when ``one(element, item)`` holds.
    """
    i = j = 0
    star, mark = -1, 0
    while j < len(items):
        if i < len(pattern) and pattern[i] is wildcard:
            star, mark = i, j
            i += 1
        elif i < len(pattern) and one(pattern[i], items[j]):
            i, j = i + 1, j + 1
        elif star >= 0:
            i, mark = star + 1, mark + 1
            j = mark
        else:
            return False
    while i < len(pattern) and pattern[i] is wildcard:
        i += 1
    return i == len(pattern)


def any_overlap(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, str] | None:
    """The first pair of patterns, one from each side, that overlap; None when disjoint."""
    return _any_overlap(tuple(a), tuple(b))


@lru_cache(maxsize=262144)
def _any_overlap(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, str] | None:
    for pa in a:
        for pb in b:
            if overlaps(pa, pb):
                return pa, pb
    return None


@dataclass(frozen=True, slots=True)
class Reach:
    """A cheap necessary condition for two sets of patterns to overlap.

    A pattern's *anchor* is its leading run of literal segments (``src/api`` for
    ``src/api/*.py``, ``""`` for ``**/*.md``); every path it owns starts with it. Two patterns
    can only overlap when one's anchor is a leading run of the other's, so two sets that pass
    :meth:`may_overlap` are worth an exact :func:`any_overlap`, and two that fail it are disjoint.
    The scheduler asks this first: it answers most questions with two set operations.
    """

    anchors: frozenset[str]  # each pattern's anchor
    prefixes: frozenset[str]  # every leading run of segments of every anchor, "" included

    def may_overlap(self, other: Reach) -> bool:
        """False only when no pattern of ``self`` overlaps one of ``other``."""
        return not (
            self.anchors.isdisjoint(other.prefixes) and other.anchors.isdisjoint(self.prefixes)
        )


@lru_cache(maxsize=65536)
def _anchor_prefixes(pattern: str) -> tuple[str, ...]:
    """``""`` and each leading run of literal segments of ``pattern``; the last is its anchor."""
    out = [""]
    for segment in pattern.split("/") if pattern else ():
        if not _GLOB_CHARS.isdisjoint(segment):
            break
        out.append(f"{out[-1]}/{segment}" if out[-1] else segment)
    return tuple(out)


@lru_cache(maxsize=65536)
def reach(patterns: tuple[str, ...]) -> Reach:
    """The :class:`Reach` of normalized ``patterns`` (``()`` reaches nothing)."""
    runs = [_anchor_prefixes(pattern) for pattern in patterns]
    return Reach(
        frozenset(run[-1] for run in runs), frozenset(prefix for run in runs for prefix in run)
    )


@lru_cache(maxsize=4096)
def _regex(pattern: str) -> re.Pattern[str]:
    parts: list[str] = []
    for segment in _segments(pattern):
        if segment is None:
            parts.append("(?:[^/]+/)*")
            continue
        chunk: list[str] = []
        for token in segment:
            if token == _STAR:
                chunk.append("[^/]*")
            else:
                assert isinstance(token, _Char)
                if token.chars is None:
                    chunk.append("[^/]")
                elif len(token.chars) == 1 and not token.negated:
                    chunk.append(re.escape(next(iter(token.chars))))
                else:
                    body = "".join(re.escape(c) for c in sorted(token.chars))
                    chunk.append(f"[{'^/' if token.negated else ''}{body}]")
        parts.append("".join(chunk) + "/")
    return re.compile("".join(parts))


def owns(pattern: str, path: str) -> bool:
    """Whether the normalized ``pattern`` owns the repository-relative file ``path``."""
    return _regex(pattern).fullmatch(normalize(path) + "/") is not None


def sparse_dirs(patterns: Sequence[str]) -> tuple[str, ...] | None:
    """The directories a cone-mode sparse checkout needs so every path ``patterns`` own is there.

    Cone mode (``git sparse-checkout set --cone DIR...``) always checks out the top-level files
    and the files directly inside each parent of a listed directory, plus everything beneath a
    listed directory. So a pattern needs the run of literal segments it starts with, minus its
    last segment when that names a file (``src/api/app.py`` needs ``src/api``); a pattern that
    only names top-level files (``README.md``, ``*.toml``) needs nothing. ``None`` when some
    pattern could own a path anywhere (``**/*.py``, ``*/x``): only a full checkout holds all.

    Returns:
        The sorted directories, without any that lies inside another listed one.
    """
    dirs: set[str] = set()
    for raw in patterns:
        pattern = normalize(raw)
        segments = pattern.split("/") if pattern else []
        literal = list(_anchor_prefixes(pattern)[-1].split("/")) if pattern else []
        literal = [s for s in literal if s]
        if len(literal) == len(segments) and segments and _names_files(segments[-1]):
            literal = literal[:-1]  # a file: its folder
        elif len(segments) == 1 and _names_files(segments[0]):
            literal = []  # top-level files only (`*.md`): cone mode always has them
        elif not literal:
            return None  # a glob in the first folder: anything may be owned
        if literal:
            dirs.add("/".join(literal))
    ordered = sorted(dirs)
    return tuple(d for d in ordered if not any(d.startswith(f"{o}/") for o in ordered))
