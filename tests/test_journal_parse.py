"""The fast journal reader (one UTF-8 decode and the JSON scanner run at each line's start) says
exactly what line-by-line parsing says: same records, same damaged line, same words."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from stretto.api import watch
from stretto.engine import status
from stretto.engine.events import EventReader
from stretto.engine.journal import JOURNAL_NAME, Journal, parse_lines, parse_record, read_journal
from stretto.errors import RunError

GOOD = b'{"seq":1,"gen":0,"ts":1.5,"kind":"event","type":"x","a":[1,{"b":"\\u00e9\\n"}]}'
#: Lines line-by-line parsing accepts or refuses, each for its own reason.
ODD = [
    GOOD,
    b'  {"seq":1,"gen":0,"ts":1,"kind":"event","type":"x"}  ',  # whitespace around: accepted
    b'{"seq":1,"gen":0,"ts":1,"kind":"event","type":"x"}\t',
    b'{"seq":1,"gen":0,"ts":1,"kind":"event","type":"x","seq":2}',  # duplicate key: last wins
    b'{"seq":1,"gen":0,"ts":1,"kind":"event","type":"x"} {"seq":2}',  # extra data
    b'{"seq":1,"gen":0,"ts":1,"kind":"event","type":"x",',  # cut
    b'{"seq":1,"gen":0,"ts":NaN,"kind":"event","type":"x"}',
    b'{"seq":1,"gen":0,"ts":Infinity,"kind":"event","type":"x"}',
    b'{"seq":1,"gen":0,"ts":1' + b"0" * 400 + b',"kind":"event","type":"x"}',  # int too big
    b'{"seq":1,"gen":0,"ts":1e999,"kind":"event","type":"x"}',
    b'{"gen":0,"seq":1,"ts":1,"kind":"event","type":"x"}',  # header out of order
    b'{"seq":-1,"gen":0,"ts":1,"kind":"event","type":"x"}',
    b'{"seq":true,"gen":0,"ts":1,"kind":"event","type":"x"}',
    b'{"seq":1,"gen":0,"ts":"1","kind":"event","type":"x"}',
    b'{"seq":1,"gen":0,"ts":1,"kind":"other","type":"x"}',
    b'{"seq":1,"gen":0,"ts":1,"kind":"event","type":""}',
    b'{"seq":1,"gen":0,"ts":1,"kind":"event","type":"x","s":"a\tb"}',  # raw control character
    b'{"seq":1,"gen":0,"ts":1,"kind":"event","type":"x","s":"\xff"}',  # not UTF-8
    b"\xef\xbb\xbf" + GOOD,  # a byte-order mark
    b"[1, 2]",
    b"17",
    b"",
    b"null",
]


def verdict(line: bytes) -> object:
    try:
        return parse_record(line).to_dict()
    except ValueError as exc:
        return str(exc)


@pytest.mark.parametrize("line", ODD)
def test_each_odd_line_gets_the_verdict_and_words_of_line_by_line_parsing(line: bytes) -> None:
    for block in (line + b"\n", GOOD + b"\n" + line + b"\n" + GOOD + b"\n"):
        records, damage = parse_lines(block)
        got: list[object] = [r.to_dict() for r in records] + ([damage] if damage else [])
        want: list[object] = []
        for one in block.split(b"\n")[:-1]:
            want.append(verdict(one))
            if isinstance(want[-1], str):
                break  # parse_lines stops after the first damaged line
        assert got == want


def test_the_large_integer_time_is_damage_not_a_crash() -> None:
    line = b'{"seq":1,"gen":0,"ts":1' + b"0" * 400 + b',"kind":"event","type":"x"}'
    with pytest.raises(ValueError, match="ts must be a number"):
        parse_record(line)


def test_a_record_split_over_two_lines_is_refused_at_its_first_line(tmp_path: Path) -> None:
    """Whitespace may sit between JSON tokens, so a record broken at a comma would decode whole
    if read as one text; each line must be one record."""
    run = tmp_path / "run"
    with Journal.create(run) as journal:
        for i in range(3):
            journal.append("step", i=i)
    path = run / JOURNAL_NAME
    lines = path.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b',"i":', b',\n"i":')
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(RunError, match=rf"{re.escape(str(path))}:2: journal is damaged: not a"):
        read_journal(path)
    with pytest.raises(RunError, match=rf"{re.escape(str(path))}:2: journal is damaged: not a"):
        EventReader(run).read_new()


def test_the_fast_reader_gives_the_records_the_writer_wrote(tmp_path: Path) -> None:
    run = tmp_path / "run"
    written = []
    with Journal.create(run) as journal:
        for i in range(200):
            written.append(journal.append("step", i=i, text="é\u2028" * (i % 3), n=[i, 1.5]))
            if i % 10 == 0:
                written.append(journal.intent("merge", task=f"t{i}"))
                written.append(journal.done(written[-1]))
    assert read_journal(run / JOURNAL_NAME) == written
    assert EventReader(run).read_new() == written


def _compared_types(module: object, function: str) -> set[str]:
    """Every string that ``function`` of ``module`` compares a record's type (``rec.type`` or
    ``t``) with, by ``==`` or ``in``."""
    tree = ast.parse(Path(module.__file__).read_text())  # type: ignore[attr-defined]
    (body,) = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == function]
    found: set[str] = set()
    for node in ast.walk(body):
        if not isinstance(node, ast.Compare):
            continue
        left = node.left
        if (isinstance(left, ast.Attribute) and left.attr == "type") or (
            isinstance(left, ast.Name) and left.id == "t"
        ):
            for comp in node.comparators:
                found |= {
                    c.value
                    for c in ast.walk(comp)
                    if isinstance(c, ast.Constant) and isinstance(c.value, str)
                }
    return found


def test_the_status_fold_skips_no_type_it_reads() -> None:
    compared = _compared_types(status, "_one")
    assert {"run_started", "task_finished", "planner_call"} <= compared
    assert compared <= status._FOLDED


def test_the_watch_skips_no_type_it_reads() -> None:
    compared = _compared_types(watch, "_note")
    assert {"run_started", "run_finished", "journal_reopened", "task_finished"} <= compared
    assert compared <= watch._NOTED


def test_json_of_a_record_round_trips_through_the_fast_reader() -> None:
    obj = {"seq": 3, "gen": 1, "ts": 2.25, "kind": "intent", "type": "merge", "x": {"y": None}}
    (record,), damage = parse_lines(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
    assert damage is None and record.to_dict() == obj
