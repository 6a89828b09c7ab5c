"""Helpers shared by the conformance tests (``test_<cli>.py``); what differs per CLI stays there.

pytest puts this folder on ``sys.path`` (``tests`` is not a package), so the tests import it as
``from _support import ...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stretto.agents import Adapter, AgentEvent, AgentResult, AttemptContext
from stretto.plans.plan import Task
from stretto.process import TOKEN_VAR, run_process
from stretto.testing.fakemodel import FakeModelServer, LoggedRequest
from stretto.testing.repo import IDENTITY, git, make_repo

ROOT = Path(__file__).resolve().parents[2]
NPM_BIN = ROOT / ".tools" / "npm" / "node_modules" / ".bin"  # the npm CLIs (scripts/install-agents)
AIDER = ROOT / ".tools" / "aider" / "bin" / "aider"  # aider lives in a venv of its own
WRITE_TASK_FILE = 'echo "$STRETTO_TASK_ID" > "$STRETTO_TASK_ID.txt"'  # one script, many tasks
PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy")


#: OpenAI's answer (HTTP 429) when the account has no credit left: not a rate limit.
OPENAI_NO_CREDIT = {
    "error": {
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "type": "insufficient_quota",
        "param": None,
        "code": "insufficient_quota",
    }
}


def require_cli(path: Path) -> Path:
    """``path`` if the pinned CLI is installed there; else the test fails (it never skips)."""
    assert path.exists(), (
        f"{path} is missing: run scripts/install-agents "
        "(the conformance suite fails rather than skips without it)"
    )
    return path


def path_with(bin_dir: Path) -> str:
    """This process's ``PATH`` with ``bin_dir`` in front."""
    return f"{bin_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}"


def base_env(home: Path, token: str, *, bin_dir: Path | None = NPM_BIN) -> dict[str, str]:
    """An attempt's environment before the CLI's own variables: PATH, HOME, LANG, token, IDENTITY.

    ``bin_dir`` goes in front of ``PATH``; ``None`` leaves this process's ``PATH`` as it is.
    """
    return {
        "PATH": path_with(bin_dir) if bin_dir else os.environ.get("PATH", ""),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        TOKEN_VAR: token,
        **IDENTITY,
    }


def make_task(**overrides: Any) -> Task:
    """A one-step task (``id="t"``, stage ``work``, leasing everything), with ``overrides``."""
    fields: dict[str, Any] = dict(
        id="t",
        goal="do it",
        title="t",
        description="",
        role="implement",
        complexity="low",
        stage="work",
        files=None,
        lease=("**",),
        depends_on=(),
        explicit_deps=(),
    )
    fields.update(overrides)
    return Task(**fields)


def bare_context(
    task: Task,
    directory: Path,
    model: str | None,
    settings: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    log_dir: Path | None = None,
) -> AttemptContext:
    """A context for calling ``build`` or ``model_for`` alone: prompt ``"p"``, all in ``directory``.

    ``log_dir`` defaults to ``directory`` and ``env`` to an empty one.
    """
    return AttemptContext(
        task,
        1,
        "r",
        directory,
        "p",
        directory / "p.md",
        log_dir if log_dir is not None else directory,
        env if env is not None else {},
        model,
        None,
        settings,
    )


def repo_context(
    repo: Path,
    server: FakeModelServer,
    task: Task,
    *,
    timeout: float,
    prompt: str = "Do the task.",
    extra_env: Mapping[str, str] | None = None,
    settings: Mapping[str, Any] | None = None,
    bin_dir: Path | None = NPM_BIN,
) -> AttemptContext:
    """An attempt working in ``repo`` itself, model ``fake-model`` at ``server``'s OpenAI URL.

    The token is fresh and random; the log folder is ``attempt-<token>`` beside ``repo``, and
    HOME is ``home`` beside it. ``extra_env`` comes last, so it can override anything.
    """
    token = secrets.token_hex(8)
    log_dir = repo.parent / f"attempt-{token}"
    env = {
        **base_env(repo.parent / "home", token, bin_dir=bin_dir),
        "OPENAI_BASE_URL": server.env()["OPENAI_BASE_URL"],
        "OPENAI_API_KEY": "sk-fake",
        **(extra_env or {}),
    }
    return AttemptContext(
        task=task,
        attempt=1,
        run_id="conformance",
        workspace=repo,
        prompt=prompt,
        prompt_file=log_dir / "prompt.md",
        log_dir=log_dir,
        env=env,
        model="fake-model",
        timeout=timeout,
        settings=settings or {},
    )


@dataclass
class Ran:
    """One attempt run through ``run_process`` and the adapter, as the runner would."""

    result: AgentResult
    events: list[AgentEvent]
    exit_code: int | None
    duration: float
    token: str  # the attempt's TOKEN_VAR, to look for leftover processes
    log_path: Path

    @property
    def log(self) -> str:
        """The agent's log (stdout and stderr as run_process wrote them)."""
        return self.log_path.read_text(errors="replace")


def run_attempt(adapter: Adapter, ctx: AttemptContext) -> Ran:
    """Build ``ctx``'s command, run it to the end (or ``ctx.timeout``), parse it and decide."""
    launch = adapter.build(ctx)
    events: list[AgentEvent] = []
    log_path = ctx.log_dir / "agent.log"
    finished = asyncio.run(
        run_process(
            list(launch.argv),
            cwd=launch.cwd,
            env=launch.env,
            log_path=log_path,
            timeout=ctx.timeout,
            stdin=launch.stdin,
            on_line=lambda line, stream: events.extend(adapter.parse_line(line, stream)),
            grace=1.0,
        )
    )
    result = adapter.decide(finished.exit_code, finished.timed_out, events)
    return Ran(result, events, finished.exit_code, finished.duration, ctx.env[TOKEN_VAR], log_path)


def kinds(events: Sequence[AgentEvent], kind: str) -> list[Mapping[str, Any]]:
    """The data of the events of one kind, in order."""
    return [event.data for event in events if event.kind == kind]


def generate_requests(server: FakeModelServer) -> list[LoggedRequest]:
    """The model calls the server got (not the side requests such as model listings)."""
    return [r for r in server.requests if r.endpoint == "generate"]


def greet_repo(base: Path) -> Path:
    """``base/repo``, a git repository holding ``greet.py``, and an empty ``base/home``."""
    (base / "home").mkdir()
    return make_repo(base / "repo", {"greet.py": "print('hello')\n"})


class RecordingProxy:
    """A "proxy" on 127.0.0.1 that records each request line it gets and forwards nothing.

    Point the proxy variables (:func:`proxy_env`) at :attr:`url`: whatever a CLI tries to reach
    besides the loopback model server ends up in :attr:`seen` (check 7).
    """

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.seen: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    first = conn.recv(4096).split(b"\r\n", 1)[0]
                except OSError:
                    first = b"?"
                self.seen.append(first.decode(errors="replace") or "<connected>")
                with contextlib.suppress(OSError):
                    conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")

    def __enter__(self) -> RecordingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()


def proxy_env(url: str) -> dict[str, str]:
    """Every proxy variable (upper and lower case) set to ``url``; ``NO_PROXY`` is the caller's."""
    return dict.fromkeys(PROXY_VARS, url)


def two_task_plan(name: str, agent: str, verb: str) -> str:
    """A plan of one stage with two parallel steps for ``agent``: alpha.txt and beta.txt."""
    return f"""\
name: {name}
stages:
  - name: work
    steps:
      - {{id: alpha, goal: {verb} alpha.txt, files: [alpha.txt], agent: {agent}}}
      - {{id: beta, goal: {verb} beta.txt, files: [beta.txt], agent: {agent}}}
"""


def committed_project(base: Path, plan: str, config: str) -> Path:
    """``base/project``: a repository with plan.yaml and stretto.toml in a commit of their own."""
    project = make_repo(base / "project", {"README.md": "hi\n"})
    (project / "plan.yaml").write_text(plan)
    (project / "stretto.toml").write_text(config)
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "plan")
    return project


def setenv_all(monkeypatch: pytest.MonkeyPatch, env: Mapping[str, str]) -> None:
    """``monkeypatch.setenv`` for each variable of ``env``."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def identity_in_home_only(project: Path, home: Path) -> bytes:
    """Give the user's git identity only through ``home/.gitconfig`` (as on most machines: the
    repository has none of its own) and return ``.git/config``'s bytes, to compare after a run.

    Point ``HOME`` at ``home`` and leave ``GIT_AUTHOR_*`` unset in the run's environment.
    """
    home.mkdir(parents=True, exist_ok=True)
    (home / ".gitconfig").write_text("[user]\n\tname = Ada User\n\temail = ada@example.org\n")
    git(project, "config", "--unset", "user.name")
    git(project, "config", "--unset", "user.email")
    return (project / ".git" / "config").read_bytes()


def no_identity_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove ``GIT_AUTHOR_*`` / ``GIT_COMMITTER_*`` from this process's environment."""
    for key in IDENTITY:
        monkeypatch.delenv(key, raising=False)
