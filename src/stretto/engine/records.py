"""A journal line: :class:`Record` and how bytes become records (:func:`parse_lines`,
:func:`parse_record`), with the checks that make a damaged line an error with its line number;
split from :mod:`stretto.engine.journal`, which appends, locks, reads files and re-exports these.
"""

from __future__ import annotations

import gc
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, NoReturn, TypeGuard

Kind = Literal["intent", "done", "fail", "event"]
KINDS: frozenset[str] = frozenset({"intent", "done", "fail", "event"})
_HEADER = ("seq", "gen", "ts", "kind", "type")


@dataclass(frozen=True, slots=True)
class Record:
    """One journal line. ``fields`` holds every key after the five header keys, in file order."""

    seq: int
    gen: int
    ts: float
    kind: Kind
    type: str
    fields: Mapping[str, Any]

    @property
    def of(self) -> int | None:
        """The seq of the intent a ``done`` / ``fail`` record completes; None for other kinds."""
        of = self.fields.get("of")
        return of if self.kind in ("done", "fail") and _is_int(of) else None

    def to_dict(self) -> dict[str, Any]:
        """The record as the plain dict it was written from (header keys first)."""
        head = {"seq": self.seq, "gen": self.gen, "ts": self.ts, "kind": self.kind}
        return {**head, "type": self.type, **self.fields}


class _Damage(Exception):
    """A line that is not a well-formed record (internal; becomes a RunError with file:line)."""


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


#: One decoder for every line (``json.loads`` with an argument builds a new one per call, which
#: was a third of the time to read a journal); NaN and Infinity are not JSON.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_DECODE = _DECODER.decode
#: The C scanner: one JSON value from an index, (value, end); no whitespace skipped.
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]
_NUMBER = (int, float)


#: Records are built through their slots' own setters: a frozen dataclass's ``__init__`` goes
#: through ``object.__setattr__`` for each field, three times slower (100,000 records a journal).
_NEW_RECORD = object.__new__
_SET_SEQ, _SET_GEN, _SET_TS, _SET_KIND, _SET_TYPE, _SET_FIELDS = (
    getattr(Record, name).__set__ for name in ("seq", "gen", "ts", "kind", "type", "fields")
)


def _record(obj: Any) -> Record:
    """The Record a decoded line holds; _Damage if it is not one (``obj`` loses its header)."""
    # JSON gives exact dicts, ints, floats and bools: type() is both exact and cheap here.
    if type(obj) is not dict or tuple(obj)[:5] != _HEADER:  # a tuple is cheaper than islice
        raise _Damage(f"not a record: the first keys must be {', '.join(_HEADER)}")
    pop = obj.pop
    seq, gen, ts, kind, type_ = pop("seq"), pop("gen"), pop("ts"), pop("kind"), pop("type")
    if not (type(seq) is int and type(gen) is int and seq >= 0 and gen >= 0):
        raise _Damage("seq and gen must be non-negative integers")
    if type(ts) not in _NUMBER:
        raise _Damage("ts must be a number")
    try:
        ts = float(ts)  # an integer too large for a float is no time either
    except OverflowError:
        raise _Damage("ts must be a number") from None
    if not math.isfinite(ts):
        raise _Damage("ts must be a number")
    if kind not in KINDS or type(type_) is not str or not type_:
        raise _Damage(f"kind must be one of {sorted(KINDS)} and type a non-empty string")
    record = _NEW_RECORD(Record)
    _SET_SEQ(record, seq)
    _SET_GEN(record, gen)
    _SET_TS(record, ts)
    _SET_KIND(record, kind)
    _SET_TYPE(record, type_)
    _SET_FIELDS(record, MappingProxyType(obj))
    return record


def _parse(line: bytes) -> Record:
    try:
        obj = _DECODE(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Damage(f"not a JSON line: {exc}") from None
    return _record(obj)


def parse_lines(data: bytes) -> tuple[list[Record], str | None]:
    """The lines of ``data`` (whole lines, each ending with a newline) as Records, up to the
    first damaged one, and what is wrong with that one (as :func:`parse_record` words it; None
    when every line is a record): its line number in ``data`` is ``len(records) + 1``.

    The same verdicts and messages as :func:`parse_record` line by line, faster: the block is
    decoded from UTF-8 once and the decoder's scanner is run at each line's start. A line is
    taken on this path only when one JSON value spans it exactly (no whitespace around it, no
    value running on to the next line); any other line, and a block that is not UTF-8, goes
    through :func:`_parse` itself, which decides and words the verdict. The cyclic garbage
    collector is paused meanwhile (decoded JSON holds no cycles; with 100,000 records kept
    alive, its passes over them were a third of the time).
    """
    records: list[Record] = []
    add = records.append
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            for line in data.split(b"\n")[:-1]:
                add(_parse(line))
            return records, None
        scan, find, record, pos, size = _SCAN, text.find, _record, 0, len(text)
        while pos < size:
            end = find("\n", pos)
            try:
                obj, stop = scan(text, pos)
            except (StopIteration, ValueError):  # _parse says whether and why the line is bad
                stop = -1
            add(record(obj) if stop == end else _parse(text[pos:end].encode("utf-8")))
            pos = end + 1
        return records, None
    except _Damage as exc:
        return records, str(exc)
    finally:
        if paused:
            gc.enable()


def parse_record(line: bytes) -> Record:
    """One journal line (without its newline) as a Record; ValueError if it is not one."""
    try:
        return _parse(line)
    except _Damage as exc:
        raise ValueError(str(exc)) from None
