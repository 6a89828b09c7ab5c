"""A scripted model server: drives the real agent CLIs offline, over their own HTTP protocols.

One server on 127.0.0.1 speaks OpenAI Chat Completions, the OpenAI Responses API, Anthropic
Messages and Gemini generateContent, so Claude Code, Codex, Gemini CLI, aider, opencode and
qwen-code can run against it with no network. A :class:`Script` holds sessions of steps (a
reply, or an injected HTTP error or hang) and match rules for side requests; each session has a
URL prefix, ``/s/<name>``. See docs/fake-model.md::

    from stretto.testing.fakemodel import FakeModelServer, Script, Step, ToolCall

    script = Script.from_steps([
        Step(tool_calls=[ToolCall("write_file", {"file_path": "a.txt", "content": "hi"})]),
        Step(text="Wrote a.txt."),
    ])
    with FakeModelServer(script) as server:
        env = server.env()  # OPENAI_BASE_URL, ANTHROPIC_BASE_URL, GOOGLE_GEMINI_BASE_URL
        ...
        assert server.requests[-1].step == 1

Modules: :mod:`.script` (the script format), :mod:`.selection` (which step answers), the
protocols (:mod:`.openai`, :mod:`.anthropic`, :mod:`.gemini`), :mod:`.server` (HTTP) and
:mod:`.serve` (the ``serve`` command).
"""

from stretto.testing.fakemodel.script import (
    PROTOCOLS,
    HttpError,
    Match,
    Rule,
    Script,
    ScriptError,
    Session,
    Step,
    ToolCall,
    Usage,
)
from stretto.testing.fakemodel.serve import serve_main
from stretto.testing.fakemodel.server import FakeModelServer, LoggedRequest
from stretto.testing.fakemodel.validate import load_script, parse_script, script_from_dict

__all__ = [
    "PROTOCOLS",
    "FakeModelServer",
    "HttpError",
    "LoggedRequest",
    "Match",
    "Rule",
    "Script",
    "ScriptError",
    "Session",
    "Step",
    "ToolCall",
    "Usage",
    "load_script",
    "parse_script",
    "script_from_dict",
    "serve_main",
]
