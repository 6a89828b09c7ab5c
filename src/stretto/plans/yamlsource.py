"""Load YAML into plain Python values while remembering where every value came from.

Validation errors must name file:line:column, so loading returns, beside the data, the position
of every mapping key and every value, addressed by its path (``("stages", 0, "steps", 1)``).
Duplicate keys, which PyYAML silently collapses, are reported instead. libyaml's C parser is used
when PyYAML was built with it (it usually is), which keeps a 2,000-step plan well under 100 ms.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal, overload

import yaml

from stretto.errors import Diagnostic

Path_ = tuple[str | int, ...]

try:
    _Loader: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # pragma: no cover - PyYAML without libyaml
    _Loader = yaml.SafeLoader


class Located:
    """Data loaded from YAML, with the 1-based line and column of each key and value.

    A large plan is loaded keeping only the positions of its outline (the plan's keys, each
    stage, each step: paths of up to :data:`OUTLINE_DEPTH` parts); the first question about a
    deeper position reads the text again, this time keeping every position. Valid plans never
    ask, so they do not pay for a million positions; an error's position is the same either way.
    """

    __slots__ = ("_keys", "_source", "_values", "data", "file")

    def __init__(
        self,
        data: Any,
        file: str,
        values: dict[Path_, tuple[int, int]] | None = None,
        keys: dict[Path_, tuple[int, int]] | None = None,
        *,
        source: str | None = None,
    ) -> None:
        self.data = data
        self.file = file
        self._values: dict[Path_, tuple[int, int]] = {} if values is None else values
        self._keys: dict[Path_, tuple[int, int]] = {} if keys is None else keys
        #: The text to read again for the positions not kept (None: every position is kept).
        self._source = source

    def __repr__(self) -> str:
        return f"Located(file={self.file!r}, positions={len(self._values)})"

    @property
    def values(self) -> dict[Path_, tuple[int, int]]:
        """Position of every value, by path."""
        self._complete()
        return self._values

    @property
    def keys(self) -> dict[Path_, tuple[int, int]]:
        """Position of every mapping key, by the path of its value."""
        self._complete()
        return self._keys

    def _complete(self) -> None:
        if self._source is None:
            return
        with paused_gc():
            full, _ = _load_located(self._source, self.file, outline=False)
        self._values, self._keys, self._source = full._values, full._keys, None

    def where(self, path: Path_, *, key: bool = False) -> tuple[int, int]:
        """Position of the value at ``path`` (or of its key), falling back to the nearest parent."""
        if self._source is not None and path not in (self._keys if key else self._values):
            self._complete()
        probe = path
        while True:
            if key and probe in self._keys:
                return self._keys[probe]
            if probe in self._values:
                return self._values[probe]
            if not probe:
                return (0, 0)
            probe = probe[:-1]

    def diagnostic(self, path: Path_, message: str, *, key: bool = False) -> Diagnostic:
        """A Diagnostic located at ``path``."""
        line, column = self.where(path, key=key)
        return Diagnostic(self.file, line, column, format_path(path), message)


def format_path(path: Path_) -> str:
    """Render ``("stages", 0, "steps", 1, "goal")`` as ``stages[0].steps[1].goal``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


_STR_TAG = "tag:yaml.org,2002:str"
# First characters any of YAML 1.1's implicit resolvers (bool, int, float, null, timestamp,
# merge, value) can match; a plain scalar starting with anything else is a string.
_MAYBE_TYPED = frozenset("0123456789-+.~<=yYnNtTfFoO")


class _FastLoader(_Loader):  # type: ignore[valid-type,misc]
    """The safe loader, minus the regex tag resolution for scalars that can only be strings."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit[0] and value and value[0] not in _MAYBE_TYPED:
            return _STR_TAG
        return super().resolve(kind, value, implicit)


_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_COLLECTION_TAGS = frozenset((_MAP_TAG, _SEQ_TAG))


def _scalar(node: yaml.Node, loader: yaml.SafeLoader) -> Any:
    """The value of a scalar node; a string is its text, so the constructor is skipped."""
    if node.tag == _STR_TAG and isinstance(node, yaml.ScalarNode):
        return node.value
    return loader.construct_object(node, deep=True)


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while many long-lived objects are built at once.

    Loading a plan creates an object per YAML node and per position; they form no cycles, yet
    the collector walks all of them again each time a few hundred more exist. For a 2,000-step
    plan that was half the loading time.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def load_located(text: str, file: str) -> tuple[Located, list[Diagnostic]]:
    """Parse one YAML document; return the located data and any problems found.

    Syntax errors come back as a single diagnostic (with the parser's own position and problem);
    duplicate keys are reported as diagnostics while the first occurrence is kept.
    """
    with paused_gc():
        loaded = _load_located(text, file, outline=True)
        # Called from here, not from the outline load, so a document nested too deeply to be
        # built fails at the same depth as it always did.
        return loaded if loaded is not None else _load_located(text, file, outline=False)


@overload
def _load_located(
    text: str, file: str, *, outline: Literal[False]
) -> tuple[Located, list[Diagnostic]]: ...
@overload
def _load_located(
    text: str, file: str, *, outline: bool
) -> tuple[Located, list[Diagnostic]] | None: ...
def _load_located(
    text: str, file: str, *, outline: bool
) -> tuple[Located, list[Diagnostic]] | None:
    """Parse and build; with ``outline``, keep only the outline's positions (see
    :class:`Located`), and return None at the first thing to report (an outline load leaves
    every problem to the full one)."""
    if outline:
        return _outline(text, file)
    loader = _FastLoader(text)
    problems: list[Diagnostic] = []
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        what = error.problem or "invalid YAML"
        context = f" ({error.context})" if error.context else ""
        hint = ""
        bad_line = text.splitlines()[line - 1] if 0 < line <= len(text.splitlines()) else ""
        if "\t" in bad_line[: max(column, 1)] or "'\\t'" in what:
            hint = "; indent with spaces, not tabs"
        elif "mapping values are not allowed" in what:
            hint = "; a value containing ': ' must be quoted"
        elif "could not find expected ':'" in what or "did not find expected key" in what:
            hint = "; check the indentation and that every key is followed by ':'"
        elif "scanning a quoted scalar" in context:
            hint = "; a quoted value is not closed: add its closing quote"
        elif "maximum nesting depth" in what:
            hint = "; a plan is never nested this deeply: flatten it"
        elif "another document" in what:
            hint = "; a plan is one YAML document: remove the second '---' and what follows"
        elif "undefined alias" in what:
            hint = "; mark the value with '&name' before repeating it with '*name'"
        located = Located(None, file)
        problems.append(
            Diagnostic(file, line, column, "", f"YAML syntax error: {what}{context}{hint}")
        )
        return located, problems
    except yaml.reader.ReaderError as error:  # a character YAML does not allow (NUL, BEL, …)
        code = error.character if isinstance(error.character, int) else ord(error.character)
        line, column = _line_and_column(text, error.position)
        message = (
            f"YAML does not allow the control character U+{code:04X}; remove it, or write it "
            f'as "\\x{code:02x}" inside a double-quoted string'
        )
        return Located(None, file), [Diagnostic(file, line, column, "", message)]
    except yaml.YAMLError as error:  # pragma: no cover - other errors without a position
        return Located(None, file), [Diagnostic(file, 0, 0, "", f"YAML error: {error}")]
    finally:
        loader.dispose()
    located = Located(None, file)
    if node is None:
        return located, problems
    budget = _Budget(value_limit(text))
    try:
        located.data = _build(node, (), located, loader, problems, budget)
    except _TooBig as error:
        located.data = None
        line, column = error.mark
        problems.append(Diagnostic(file, line, column, "", error.message))
    except RecursionError:
        located.data = None
        problems.append(
            Diagnostic(file, 1, 1, "", "the YAML is nested too deeply to be a plan; flatten it")
        )
    return located, problems


def _line_and_column(text: str, position: int) -> tuple[int, int]:
    """1-based line and column of a reader error's ``position``: libyaml counts UTF-8 bytes,
    PyYAML's own reader characters."""
    before = text[:position]
    if _Loader is not yaml.SafeLoader:
        before = text.encode("utf-8", "surrogatepass")[:position].decode("utf-8", "replace")
    return before.count("\n") + 1, len(before.rsplit("\n", 1)[-1]) + 1


#: The fewest values a document may always expand to. Aliases (``*name``) repeat a node without
#: copying it, so a few hundred bytes can stand for billions of values (a "billion laughs"
#: bomb); a 2,000-step plan has about 23,000 values, a 100,000-step one about 1.1 million.
MAX_VALUES = 250_000


def value_limit(text: str) -> int:
    """The most values ``text`` may expand to: :data:`MAX_VALUES`, or one per two characters
    of a larger file. Every value written out takes at least two characters (``a,``), so only
    aliases can exceed it, and the file's size (``MAX_PLAN_BYTES``) bounds it."""
    return max(MAX_VALUES, len(text) // 2)


class _TooBig(Exception):
    def __init__(self, message: str, mark: tuple[int, int]) -> None:
        super().__init__(message)
        self.message, self.mark = message, mark


class _Budget:
    """How many more values :func:`_build` may make."""

    __slots__ = ("left", "limit")

    def __init__(self, left: int) -> None:
        self.left = self.limit = left

    def spend(self, node: yaml.Node) -> None:
        self.left -= 1
        if self.left < 0:
            raise self.too_big(_mark(node))

    def too_big(self, mark: tuple[int, int]) -> _TooBig:
        return _TooBig(
            f"the YAML expands to more than {self.limit:,} values (each alias, '*name', "
            "counts as a copy of what '&name' marks); a plan is never that large: remove the "
            "aliases that repeat big parts, or split the work into several plans",
            mark,
        )


#: Positions of paths up to this long are kept by an outline load: the plan's keys, its stages
#: and their keys, and its steps (``("stages", 0, "steps", 1)``).
OUTLINE_DEPTH = 4


class _Unusual(Exception):
    """Something an outline load leaves to the full one: it has a problem to report (a
    duplicate key, an unsupported tag) or a merge key (``<<``), whose positions are copied."""


def _outline(text: str, file: str) -> tuple[Located, list[Diagnostic]] | None:
    """The outline load: built from the parser's events, so no tree of nodes is kept (for a
    large plan the nodes and their marks took more memory than the data); None when the
    document has something only the full load handles (aliases, tags, problems)."""
    loader = _FastLoader(text)
    try:
        loader.get_event()  # the stream's start
        if loader.check_event(yaml.StreamEndEvent):
            return Located(None, file), []
        loader.get_event()  # the document's start
        located = Located(None, file, source=text)
        budget = _Budget(value_limit(text))
        data = _from_events(loader, loader.get_event(), (), located, budget)
        loader.get_event()  # the document's end
        if not loader.check_event(yaml.StreamEndEvent):
            return None  # another document: the full load reports it
        located.data = data
        return located, []
    except _TooBig as error:  # the same value as the full load would stop at
        return Located(None, file), [Diagnostic(file, *error.mark, "", error.message)]
    except (_Unusual, RecursionError, yaml.YAMLError):
        return None
    finally:
        loader.dispose()


def _from_events(
    loader: Any, event: Any, path: Path_ | None, located: Located, budget: _Budget
) -> Any:
    """The value that starts with ``event``; its position is kept when ``path`` is given
    (a path of the outline), and so are its children's while they are in the outline too."""
    mark = event.start_mark
    budget.left -= 1
    if budget.left < 0:
        raise budget.too_big((mark.line + 1, mark.column + 1))
    if path is not None:
        located._values[path] = (mark.line + 1, mark.column + 1)
    kind = type(event)
    if event.anchor is not None or kind is yaml.AliasEvent:
        raise _Unusual  # copies are counted and built by the full load
    tag = event.tag
    if kind is yaml.ScalarEvent:
        value = event.value
        if tag is None or tag == "!":
            if event.implicit[0] and value and value[0] not in _MAYBE_TYPED:
                return value  # what _FastLoader.resolve says, without the call
            tag = loader.resolve(yaml.ScalarNode, value, event.implicit)
        if tag == _STR_TAG:
            return value
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        return loader.construct_object(node, deep=True)
    deeper = path is not None and len(path) < OUTLINE_DEPTH
    if kind is yaml.SequenceStartEvent:
        if (tag if tag not in (None, "!") else _SEQ_TAG) != _SEQ_TAG:
            raise _Unusual
        items: list[Any] = []
        while True:
            event = loader.get_event()
            if type(event) is yaml.SequenceEndEvent:
                return items
            child = (*path, len(items)) if deeper else None  # type: ignore[misc]
            items.append(_from_events(loader, event, child, located, budget))
    if kind is not yaml.MappingStartEvent or (
        (tag if tag not in (None, "!") else _MAP_TAG) != _MAP_TAG
    ):
        raise _Unusual
    result: dict[Any, Any] = {}
    while True:
        event = loader.get_event()
        kind = type(event)
        if kind is yaml.MappingEndEvent:
            return result
        if kind is not yaml.ScalarEvent or event.anchor is not None:
            raise _Unusual
        tag = event.tag
        if tag is None or tag == "!":
            tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        if tag == _STR_TAG:
            key = event.value
        elif tag == _MERGE_TAG:
            raise _Unusual
        else:
            node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark)
            key = loader.construct_object(node, deep=True)
            if not isinstance(key, str):
                key = str(key)
        if key in result:
            raise _Unusual  # a duplicate: the full load reports it
        child = None
        if deeper:
            child = (*path, key)  # type: ignore[misc]
            mark = event.start_mark
            located._keys[child] = (mark.line + 1, mark.column + 1)
        result[key] = _from_events(loader, loader.get_event(), child, located, budget)


def _build(
    node: yaml.Node,
    path: Path_,
    located: Located,
    loader: yaml.SafeLoader,
    problems: list[Diagnostic],
    budget: _Budget,
) -> Any:
    budget.spend(node)
    located.values[path] = _mark(node)
    if not isinstance(node, yaml.ScalarNode) and node.tag not in _COLLECTION_TAGS:
        problems.append(
            Diagnostic(
                located.file,
                *_mark(node),
                format_path(path),
                f"YAML cannot read this value: the tag "
                f"'{node.tag.replace('tag:yaml.org,2002:', '!!')}' is not supported; remove it",
            )
        )
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        merged: list[yaml.Node] = []  # the values of '<<' keys, applied after the own keys
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged.append(value_node)
                continue
            key = _scalar_or_problem(key_node, path, located, loader, problems)
            if not isinstance(key, str):
                key = str(key)
            child = (*path, key)
            if key in result:
                first_line = located.keys[child][0]
                problems.append(
                    Diagnostic(
                        located.file,
                        *_mark(key_node),
                        format_path(child),
                        f"duplicate key '{key}' (first given on line {first_line}); "
                        "keep one of them",
                    )
                )
                continue
            located.keys[child] = _mark(key_node)
            result[key] = _build(value_node, child, located, loader, problems, budget)
        for source in merged:
            _merge(source, result, path, located, loader, problems, budget)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(item, (*path, index), located, loader, problems, budget)
            for index, item in enumerate(node.value)
        ]
    return _scalar_or_problem(node, path, located, loader, problems)


def _merge(
    source: yaml.Node,
    result: dict[Any, Any],
    path: Path_,
    located: Located,
    loader: yaml.SafeLoader,
    problems: list[Diagnostic],
    budget: _Budget,
) -> None:
    """Apply a YAML merge key (``<<: *defaults``, or a list of them) to ``result``: keys it
    already has win, and earlier mappings of a list win over later ones."""
    sources = source.value if isinstance(source, yaml.SequenceNode) else [source]
    for mapping in sources:
        if not isinstance(mapping, yaml.MappingNode):
            problems.append(
                Diagnostic(
                    located.file,
                    *_mark(mapping),
                    format_path(path),
                    "'<<' merges a mapping into this one; give it an anchored mapping "
                    "(<<: *defaults) or a list of them",
                )
            )
            continue
        scratch = Located(None, located.file)  # the positions of what is taken from it
        extra = _build(mapping, path, scratch, loader, problems, budget)
        taken = [key for key in extra if key not in result]
        for key in taken:
            result[key] = extra[key]
        for positions, into in ((scratch.values, located.values), (scratch.keys, located.keys)):
            into.update(
                (where, at)
                for where, at in positions.items()
                if len(where) > len(path) and where[len(path)] in taken
            )


def _scalar_or_problem(
    node: yaml.Node,
    path: Path_,
    located: Located,
    loader: yaml.SafeLoader,
    problems: list[Diagnostic],
) -> Any:
    """:func:`_scalar`, with a value YAML cannot build (an unknown ``!tag``) as a problem."""
    try:
        return _scalar(node, loader)
    except yaml.YAMLError as error:  # kept as its text, so only the tag is reported
        what = getattr(error, "problem", None) or str(error)
        problems.append(
            Diagnostic(
                located.file,
                *_mark(node),
                format_path(path),
                f"YAML cannot read this value: {what}; remove the tag or quote the value",
            )
        )
        return node.value if isinstance(node, yaml.ScalarNode) else None


def describe(value: Any) -> str:
    """What a YAML value is, in words: ``a string ('x')``, ``a number (3)``, ``a list``, …"""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
