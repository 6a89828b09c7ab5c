"""Validating script data from YAML, JSON or Python into :class:`~.script.Script` values.

Every problem is collected, located (file:line:column and field path, when the data came from a
file) and explained with its fix, then raised together as one :class:`~.script.ScriptError`.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stretto.errors import Diagnostic
from stretto.plans.yamlsource import Located, Path_, describe, load_located
from stretto.testing.fakemodel.script import (
    PROTOCOLS,
    SESSION_NAME,
    HttpError,
    Match,
    PastEnd,
    Rule,
    Script,
    ScriptError,
    Session,
    Step,
    ToolCall,
    Usage,
)


def check_script(located: Located) -> Script:
    """Validate located data into a Script.

    Raises:
        ScriptError: every problem found.
    """
    return _Checker(located).script()


_SCRIPT_KEYS = ("sessions", "steps", "rules", "past_end", "models")
_SESSION_KEYS = ("steps", "rules", "past_end")
_STEP_KEYS = ("text", "tool_calls", "usage", "http_error", "hang", "delay")
_CALL_KEYS = ("name", "arguments", "custom", "input", "id")
_USAGE_KEYS = ("input_tokens", "output_tokens", "cached_tokens")
_ERROR_KEYS = ("status", "body", "retry_after", "times")
_RULE_KEYS = ("when", "reply")
_MATCH_KEYS = ("no_tools", "json_mode", "body_contains", "protocol", "model")
_PAST_END = ("done", "last_text")


def _suggest(word: str, options: Sequence[str]) -> str:
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


class _Checker:
    """Walks script data, collecting every problem before raising one ScriptError."""

    def __init__(self, located: Located) -> None:
        self.located = located
        self.problems: list[Diagnostic] = []

    def say(self, path: Path_, message: str, *, key: bool = False) -> None:
        self.problems.append(self.located.diagnostic(path, message, key=key))

    def script(self) -> Script:
        data = self.located.data
        if isinstance(data, list):
            data = {"steps": data}
        if not isinstance(data, dict) or not data:
            self.say(
                (),
                "a script must be a mapping with 'sessions:' (or 'steps:' for one session), "
                f"got {describe(data) if data != {} else 'an empty mapping'}",
            )
            raise ScriptError(self.problems)
        self.keys(data, (), _SCRIPT_KEYS, "script")
        sessions: dict[str, Session] = {}
        if "steps" in data:
            steps = self.steps(data["steps"], ("steps",))
            sessions["default"] = Session(steps)
        raw_sessions = data.get("sessions", {})
        if not isinstance(raw_sessions, dict):
            self.say(
                ("sessions",),
                f"expected a mapping of session name to steps, got {describe(raw_sessions)}",
            )
            raw_sessions = {}
        for name, raw in raw_sessions.items():
            path: Path_ = ("sessions", name)
            if not SESSION_NAME.match(name):
                self.say(
                    path,
                    "a session name may hold letters, digits, '.', '_', '-' (it is part of URLs)",
                    key=True,
                )
            if name in sessions:
                self.say(
                    path,
                    "session 'default' is also given by the top-level 'steps:'; keep one",
                    key=True,
                )
            session = self.session(raw, path)
            if session is not None:
                sessions[name] = session
        if "sessions" not in data and "steps" not in data:
            self.say((), "no sessions; add 'sessions:' (name: list of steps) or 'steps:'")
        elif not sessions and not self.problems:
            self.say(("sessions",), "no sessions; give at least one (name: list of steps)")
        rules = self.rules(data.get("rules", []), ("rules",))
        past_end = self.past_end(data.get("past_end", "done"), ("past_end",))
        models = self.models(data.get("models", ["fake-model"]), ("models",))
        if self.problems:
            raise ScriptError(sorted(self.problems, key=lambda d: (d.line, d.column)))
        return Script(
            sessions=sessions,
            rules=rules,
            past_end=past_end or "done",
            models=models,
            source=self.located.file,
        )

    def keys(self, data: dict[str, Any], path: Path_, allowed: Sequence[str], what: str) -> None:
        for key in data:
            if key not in allowed:
                self.say(
                    (*path, key),
                    f"unknown key '{key}' in this {what}{_suggest(key, allowed)}; "
                    f"allowed: {', '.join(allowed)}",
                    key=True,
                )

    def session(self, raw: Any, path: Path_) -> Session | None:
        if isinstance(raw, list):
            return Session(self.steps(raw, path))
        if not isinstance(raw, dict):
            self.say(
                path, f"expected a list of steps (or a mapping with 'steps:'), got {describe(raw)}"
            )
            return None
        self.keys(raw, path, _SESSION_KEYS, "session")
        if "steps" not in raw:
            self.say(path, "missing 'steps:' in this session; give a list of steps")
        return Session(
            self.steps(raw.get("steps", []), (*path, "steps")),
            rules=self.rules(raw.get("rules", []), (*path, "rules")),
            past_end=self.past_end(raw.get("past_end"), (*path, "past_end")),
        )

    def steps(self, raw: Any, path: Path_) -> tuple[Step, ...]:
        if not isinstance(raw, list):
            self.say(path, f"expected a list of steps, got {describe(raw)}")
            return ()
        steps = [self.step(item, (*path, index)) for index, item in enumerate(raw)]
        return tuple(step for step in steps if step is not None)

    def step(self, raw: Any, path: Path_) -> Step | None:
        if isinstance(raw, str):
            return Step(text=raw)
        if not isinstance(raw, dict):
            self.say(
                path, f"expected a step (a mapping with text, tool_calls, …), got {describe(raw)}"
            )
            return None
        before = len(self.problems)
        self.keys(raw, path, _STEP_KEYS, "step")
        text = raw.get("text")
        if text is not None and not isinstance(text, str):
            self.say((*path, "text"), f"expected a string, got {describe(text)}")
            text = None
        calls = self.tool_calls(raw.get("tool_calls", []), (*path, "tool_calls"))
        usage = self.usage(raw["usage"], (*path, "usage")) if "usage" in raw else None
        error = (
            self.http_error(raw["http_error"], (*path, "http_error"))
            if "http_error" in raw
            else None
        )
        hang = self.boolean(raw.get("hang", False), (*path, "hang"))
        delay = self.number(raw.get("delay", 0), (*path, "delay"))
        if not (text or calls or error or hang) and len(self.problems) == before:
            self.say(path, "empty step; give text, tool_calls, http_error or hang: true")
        if hang and error:
            self.say(
                (*path, "hang"),
                "a step cannot both hang and return http_error; split it in two steps",
            )
        if error and error.times is None and (text or calls):
            self.say(
                (*path, "http_error"),
                "this step always fails, so its text/tool_calls are never sent; "
                "add 'times: N' to fail only the first N requests, or drop them",
            )
        if error and error.times is not None and not (text or calls):
            self.say(
                (*path, "http_error", "times"),
                "after its failures this step answers with its text or tool_calls; add one",
            )
        if len(self.problems) > before:
            return None
        return Step(
            text=text,
            tool_calls=calls,
            usage=usage,
            http_error=error,
            hang=hang,
            delay=delay or 0.0,
        )

    def tool_calls(self, raw: Any, path: Path_) -> tuple[ToolCall, ...]:
        if not isinstance(raw, list):
            self.say(path, f"expected a list of tool calls, got {describe(raw)}")
            return ()
        calls: list[ToolCall] = []
        for index, item in enumerate(raw):
            where = (*path, index)
            if not isinstance(item, dict):
                self.say(where, f"expected a tool call {{name, arguments}}, got {describe(item)}")
                continue
            before = len(self.problems)
            self.keys(item, where, _CALL_KEYS, "tool call")
            name = item.get("name")
            if not isinstance(name, str) or not name:
                self.say(
                    where if name is None else (*where, "name"),
                    "missing tool name; add 'name:' (e.g. write_file)"
                    if name is None
                    else f"expected a tool name, got {describe(name)}",
                )
            arguments = item.get("arguments", {})
            if not isinstance(arguments, dict):
                self.say(
                    (*where, "arguments"),
                    f"expected a mapping of argument names to values, got {describe(arguments)}",
                )
            custom = self.boolean(item.get("custom", False), (*where, "custom"))
            text_input = item.get("input")
            if custom and not isinstance(text_input, str):
                self.say(
                    where if text_input is None else (*where, "input"),
                    "a custom tool call needs 'input:' (a string, e.g. the raw patch)",
                )
            if custom and "arguments" in item:
                self.say(
                    (*where, "arguments"),
                    "a custom tool call takes 'input:' (a string), not arguments",
                )
            if not custom and text_input is not None:
                self.say(
                    (*where, "input"),
                    "'input:' is only for custom tool calls; add 'custom: true' or use arguments",
                )
            call_id = item.get("id")
            if call_id is not None and not isinstance(call_id, str):
                self.say((*where, "id"), f"expected a string, got {describe(call_id)}")
            if len(self.problems) == before and isinstance(name, str):
                calls.append(ToolCall(name, arguments, custom=custom, input=text_input, id=call_id))
        return tuple(calls)

    def usage(self, raw: Any, path: Path_) -> Usage | None:
        if not isinstance(raw, dict) or not raw:
            self.say(path, f"expected a mapping with {', '.join(_USAGE_KEYS)}, got {describe(raw)}")
            return None
        self.keys(raw, path, _USAGE_KEYS, "usage")
        counts = {key: self.count(raw.get(key), (*path, key)) for key in _USAGE_KEYS}
        return Usage(**counts)

    def http_error(self, raw: Any, path: Path_) -> HttpError | None:
        if isinstance(raw, int) and not isinstance(raw, bool):
            raw = {"status": raw}
        if not isinstance(raw, dict):
            self.say(
                path,
                f"expected a mapping like {{status: 429, retry_after: 1}}, got {describe(raw)}",
            )
            return None
        before = len(self.problems)
        self.keys(raw, path, _ERROR_KEYS, "http_error")
        status = raw.get("status")
        if status is None:
            self.say(path, "missing 'status:' in this http_error (e.g. 400, 429 or 500)")
        elif isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            self.say(
                (*path, "status"), f"expected an HTTP error status 400-599, got {describe(status)}"
            )
        body = raw.get("body")
        if body is not None and not isinstance(body, str | dict):
            self.say(
                (*path, "body"),
                f"expected a string or a mapping (sent as JSON), got {describe(body)}",
            )
        retry_after = self.number(raw.get("retry_after"), (*path, "retry_after"))
        times = self.count(raw.get("times"), (*path, "times"), minimum=1)
        if len(self.problems) > before or not isinstance(status, int):
            return None
        return HttpError(status, body, retry_after, times)

    def rules(self, raw: Any, path: Path_) -> tuple[Rule, ...]:
        if not isinstance(raw, list):
            self.say(path, f"expected a list of rules ({{when: …, reply: …}}), got {describe(raw)}")
            return ()
        rules: list[Rule] = []
        for index, item in enumerate(raw):
            where = (*path, index)
            if not isinstance(item, dict):
                self.say(where, f"expected a rule {{when: …, reply: …}}, got {describe(item)}")
                continue
            self.keys(item, where, _RULE_KEYS, "rule")
            for key in _RULE_KEYS:
                if key not in item:
                    self.say(where, f"missing '{key}:' in this rule")
            match = self.match(item.get("when"), (*where, "when")) if "when" in item else None
            reply = self.step(item["reply"], (*where, "reply")) if "reply" in item else None
            if match is not None and reply is not None:
                rules.append(Rule(match, reply))
        return tuple(rules)

    def match(self, raw: Any, path: Path_) -> Match | None:
        if not isinstance(raw, dict) or not raw:
            self.say(
                path,
                f"expected a mapping of conditions ({', '.join(_MATCH_KEYS)}), got {describe(raw)}",
            )
            return None
        self.keys(raw, path, _MATCH_KEYS, "condition")
        no_tools = self.boolean(raw.get("no_tools"), (*path, "no_tools"))
        json_mode = self.boolean(raw.get("json_mode"), (*path, "json_mode"))
        contains = self.string(raw.get("body_contains"), (*path, "body_contains"))
        model = self.string(raw.get("model"), (*path, "model"))
        protocol = raw.get("protocol")
        protocols: tuple[str, ...] | None = None
        if protocol is not None:
            names = protocol if isinstance(protocol, list) else [protocol]
            for index, name in enumerate(names):
                where = (
                    (*path, "protocol", index)
                    if isinstance(protocol, list)
                    else (*path, "protocol")
                )
                if name not in PROTOCOLS:
                    shown = repr(name) if isinstance(name, str) else describe(name)
                    hint = _suggest(name, PROTOCOLS) if isinstance(name, str) else ""
                    self.say(
                        where, f"unknown protocol {shown}{hint}; use one of: {', '.join(PROTOCOLS)}"
                    )
            protocols = tuple(str(name) for name in names)
        return Match(
            no_tools=None if "no_tools" not in raw else no_tools,
            json_mode=None if "json_mode" not in raw else json_mode,
            body_contains=contains,
            protocol=protocols,
            model=model,
        )

    def past_end(self, raw: Any, path: Path_) -> PastEnd | Step | None:
        if raw is None:
            return None
        if raw == "done":
            return "done"
        if raw == "last_text":
            return "last_text"
        if isinstance(raw, dict):
            return self.step(raw, path)
        hint = _suggest(raw, _PAST_END) if isinstance(raw, str) else ""
        self.say(path, f"expected 'done', 'last_text' or a step, got {describe(raw)}{hint}")
        return None

    def models(self, raw: Any, path: Path_) -> tuple[str, ...]:
        if not isinstance(raw, list) or not raw or not all(isinstance(m, str) and m for m in raw):
            self.say(path, f"expected a non-empty list of model ids (strings), got {describe(raw)}")
            return ("fake-model",)
        return tuple(raw)

    def boolean(self, raw: Any, path: Path_) -> bool:
        if raw is None:
            return False
        if not isinstance(raw, bool):
            self.say(path, f"expected true or false, got {describe(raw)}")
            return False
        return raw

    def string(self, raw: Any, path: Path_) -> str | None:
        if raw is not None and (not isinstance(raw, str) or not raw):
            self.say(path, f"expected a non-empty string, got {describe(raw)}")
            return None
        return raw

    def number(self, raw: Any, path: Path_) -> float | None:
        if raw is None:
            return None
        if (
            isinstance(raw, bool)
            or not isinstance(raw, int | float)
            or raw < 0
            or not math.isfinite(raw)
        ):
            self.say(path, f"expected a number of seconds >= 0, got {describe(raw)}")
            return None
        return float(raw)

    def count(self, raw: Any, path: Path_, *, minimum: int = 0) -> int | None:
        if raw is None:
            return None
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < minimum:
            self.say(path, f"expected a whole number >= {minimum}, got {describe(raw)}")
            return None
        return raw


# --------------------------------------------------------------------------- loading


def load_script(path: Path | str) -> Script:
    """Read and validate a YAML or JSON script file.

    Raises:
        ScriptError: the file is missing, unreadable or invalid; each problem located.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScriptError(
            [Diagnostic(str(path), 0, 0, "", "file not found; check the path")]
        ) from None
    except UnicodeDecodeError as error:
        raise ScriptError(
            [Diagnostic(str(path), 0, 0, "", f"not UTF-8 text (byte {error.start}); save as UTF-8")]
        ) from None
    except OSError as error:
        raise ScriptError(
            [Diagnostic(str(path), 0, 0, "", f"cannot read: {error.strerror}")]
        ) from None
    return parse_script(text, str(path))


def parse_script(text: str, file: str = "<script>") -> Script:
    """Validate script text, YAML or JSON (``file`` is only used in messages)."""
    if file.endswith(".json"):
        try:
            located = Located(json.loads(text), file)
        except json.JSONDecodeError as error:
            raise ScriptError(
                [Diagnostic(file, error.lineno, error.colno, "", f"JSON syntax error: {error.msg}")]
            ) from None
    else:
        located, problems = load_located(text, file)
        if problems:
            raise ScriptError(problems)
    return check_script(located)


def script_from_dict(data: Any, file: str = "<script>") -> Script:
    """Validate plain data (as a YAML/JSON file would hold it) into a Script.

    Raises:
        ScriptError: every problem found.
    """
    return check_script(Located(data, file))
