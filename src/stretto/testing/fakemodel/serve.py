"""``python -m stretto.testing.fakemodel serve``: run the fake model server in the foreground."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from stretto.errors import InputError, StrettoError
from stretto.testing.fakemodel.server import FakeModelServer
from stretto.testing.fakemodel.validate import load_script

FAKE_KEYS = {
    "OPENAI_API_KEY": "sk-fake",
    "ANTHROPIC_API_KEY": "sk-ant-fake",
    "GEMINI_API_KEY": "fake",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stretto fake-model serve",
        description="Serve a scripted model on 127.0.0.1 for agent CLIs (OpenAI, Anthropic, "
        "Gemini protocols) until Ctrl-C. See docs/fake-model.md.",
    )
    parser.add_argument("--script", required=True, metavar="FILE", help="YAML or JSON script")
    parser.add_argument("--port", type=int, default=0, metavar="N", help="port (0: a free one)")
    parser.add_argument("--log", metavar="FILE", help="append every request to FILE as JSON lines")
    return parser


def describe(server: FakeModelServer) -> str:
    """What to tell each CLI: the URL, per-protocol base URLs, fake keys and the sessions."""
    lines = [f"fake model server listening on {server.url}  (script: {server.script.source})"]
    if server.log_path is not None:
        lines.append(f"request log: {server.log_path}")
    sessions = list(server.script.sessions)
    shown = "default" if "default" in sessions else sessions[0]
    env = server.env(shown)
    lines += [
        "",
        f"Point each CLI at session {shown!r}:",
        f"  OPENAI_BASE_URL={env['OPENAI_BASE_URL']}  (aider, opencode, qwen-code; codex base_url)",
        f"  ANTHROPIC_BASE_URL={env['ANTHROPIC_BASE_URL']}  (claude; no /v1)",
        f"  GOOGLE_GEMINI_BASE_URL={env['GOOGLE_GEMINI_BASE_URL']}  (gemini)",
    ]
    others = [name for name in sessions if name != shown]
    if others:
        example = server.env(others[0])["OPENAI_BASE_URL"]
        lines.append(
            f"Other sessions ({', '.join(others)}): add /s/<name> after the port, e.g. {example}"
        )
    lines += [
        "Any API key works, e.g. " + " ".join(f"{k}={v}" for k, v in FAKE_KEYS.items()),
        "Press Ctrl-C to stop.",
    ]
    return "\n".join(lines)


def serve_main(argv: Sequence[str] | None = None) -> int:
    """Run ``serve --script FILE [--port N] [--log FILE]``; returns the exit code.

    ``argv`` may start with ``serve`` or not. Serves until Ctrl-C (or SIGTERM).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["serve"]:
        args = args[1:]
    try:
        options = _parser().parse_args(args)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        script = load_script(options.script)
        server = FakeModelServer(script, port=options.port, log_path=options.log).start()
    except StrettoError as error:
        text = error.message if isinstance(error, InputError) else f"error: {error.message}"
        print(text, file=sys.stderr)
        return error.exit_code
    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():

        def on_term(signum: int, frame: FrameType | None) -> None:
            stop.set()

        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        print(describe(server), flush=True)
        while not stop.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print(f"stopped after {len(server.requests)} requests", file=sys.stderr)
    return 0
