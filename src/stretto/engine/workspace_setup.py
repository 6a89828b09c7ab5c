"""Setup commands: ``[workspace] setup``, run in each new worktree before its agent.

Each command runs with ``bash -c`` in the worktree, in its own process group (all of it is killed
on timeout), with an empty stdin; a failure stops the attempt with the command's last output.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from stretto.errors import StrettoError
from stretto.git import without_git_redirects

SETUP_TIMEOUT = 600.0
"""Default seconds one setup command may take."""
_TAIL_LINES = 40


class WorkspaceSetupError(StrettoError):
    """A setup command failed or timed out in a new workspace (exit code 1).

    A :class:`~stretto.errors.StrettoError`, not a ``RepoError``: the repository is fine, the
    user's command is not. Carries ``command``, ``cwd``, ``returncode`` (``None`` when it could not
    start or timed out) and ``output_tail`` (the last lines of its stdout and stderr).
    """

    def __init__(
        self, command: str, cwd: Path, returncode: int | None, output_tail: str, reason: str
    ) -> None:
        self.command, self.cwd, self.returncode = command, cwd, returncode
        self.output_tail = output_tail
        tail = f"\n--- last output ---\n{output_tail}" if output_tail.strip() else ""
        super().__init__(
            f"setup command `{command}` {reason} in {cwd}{tail}\n"
            "Fix the setup command in the configuration, or run it by hand in that directory."
        )


def run_setup(
    path: Path,
    commands: Sequence[str],
    *,
    timeout: float = SETUP_TIMEOUT,
    env: Mapping[str, str] | None = None,
) -> None:
    """Run each command with ``bash -c`` in the workspace; stop at the first failure.

    Each command gets its own process group (all of it is killed on timeout), an empty stdin and
    ``STRETTO_WORKSPACE`` set to the worktree path. The environment is ``env`` when given (plus
    ``PATH`` if it lacks one), else stretto's own.

    Raises:
        WorkspaceSetupError: A command could not start, exited non-zero or timed out.
    """
    # Given an environment, commands get exactly that (the runner passes the agents'
    # allow-listed one, so setup sees no secret the agents may not see); else stretto's own.
    base = dict(env) if env is not None else without_git_redirects(os.environ)
    full_env = {"PATH": os.environ.get("PATH", os.defpath), **base}
    full_env["STRETTO_WORKSPACE"] = str(path)
    for command in commands:
        with tempfile.TemporaryFile() as log:
            try:
                proc = subprocess.Popen(
                    ["bash", "-c", command],
                    cwd=path,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=full_env,
                    start_new_session=True,
                )
            except OSError as error:
                reason = f"could not start ({error})"
                raise WorkspaceSetupError(command, path, None, "", reason) from error
            try:
                returncode = proc.wait(timeout=timeout)
            except BaseException as error:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                if not isinstance(error, subprocess.TimeoutExpired):
                    raise
                reason = f"did not finish within {timeout:g} s"
                raise WorkspaceSetupError(command, path, None, _tail(log), reason) from None
            if returncode != 0:
                reason = f"failed with exit status {returncode}"
                raise WorkspaceSetupError(command, path, returncode, _tail(log), reason)


def _tail(log: IO[bytes]) -> str:
    log.seek(max(0, log.seek(0, os.SEEK_END) - 16384))
    text = log.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-_TAIL_LINES:])
