"""One exception tree for everything stretto reports to a user.

Only the CLI's top level turns these into exit codes; library code raises them with a message that
says what is wrong and how to fix it::

    StrettoError                 exit 1  base class; message is shown as-is
    ├── UsageError               exit 2  a command was called wrongly (bad option combination, …)
    ├── InputError               exit 2  a file the user wrote is invalid; carries Diagnostics
    │   ├── PlanError                    plan YAML: syntax, schema, ids, dependencies, cycles, paths
    │   ├── ConfigError                  stretto.toml / [tool.stretto]
    │   └── ScriptError                  a scripted model server's script (stretto.testing)
    ├── RepoError                exit 1  the git repository is missing or not in a usable state
    │   ├── NotARepositoryError  exit 2  the command was run outside a git work tree (or in a
    │   │                                bare repository); nothing was done
    │   └── GitCommandError              a git command failed (command, cwd, stderr)
    ├── RunError                 exit 1  a run could not start or continue (locked, damaged, …)
    │   ├── UnknownRunError      exit 2  no run has that id (or a prefix matches several)
    │   └── StorageError         exit 1  a file stretto must write could not be (disk full,
    │                                    quota, read-only): the run stopped; resume after fixing
    ├── ControlError             exit 2  a control command was refused (run not running, unknown
    │                                    task, a task in the wrong state)
    └── WorkspaceSetupError      exit 1  a [workspace] setup command failed in a new worktree

Every ``InputError`` lists :class:`Diagnostic` values, each naming file:line:column, the field
path, what is wrong and the fix, e.g.::

    plan.yaml:12:9: stages[0].steps[1].depends_on[0]: unknown step 'modles' (did you mean 'models'?)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem in an input file, located precisely enough to jump to it."""

    file: str
    line: int  # 1-based; 0 when unknown
    column: int  # 1-based; 0 when unknown
    field: str  # dotted/indexed path, e.g. "stages[0].steps[2].files[1]"; "" for the whole file
    message: str  # what is wrong, and the fix

    def __str__(self) -> str:
        where = self.file
        if self.line:
            where += f":{self.line}:{self.column}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "field": self.field,
            "message": self.message,
        }


class StrettoError(Exception):
    """Base class: a problem stretto reports to the user with a message and an exit code."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(StrettoError):
    """A command was called in a way that cannot work."""

    exit_code = 2


class InputError(StrettoError):
    """A file the user wrote is invalid; nothing was done."""

    exit_code = 2

    def __init__(self, diagnostics: list[Diagnostic], summary: str | None = None) -> None:
        self.diagnostics = diagnostics
        count = len(diagnostics)
        head = summary or f"{count} problem{'s' if count != 1 else ''} found; nothing was done"
        super().__init__("\n".join([*(str(d) for d in diagnostics), head]))


class PlanError(InputError):
    """The plan file is invalid."""


class ConfigError(InputError):
    """The configuration (stretto.toml or [tool.stretto]) is invalid."""


class RepoError(StrettoError):
    """The git repository is missing or not in a state stretto can work with."""


class NotARepositoryError(RepoError):
    """The directory is not inside a git work tree (or is a bare repository); nothing was done."""

    exit_code = 2


class RunError(StrettoError):
    """A run could not start or continue."""


class UnknownRunError(RunError):
    """No run has the id given (or a prefix matches several)."""

    exit_code = 2


class StorageError(RunError):
    """stretto could not write a file it must keep: the disk is full (or over quota, or
    read-only). The run stopped where it was; ``stretto resume`` goes on once it is fixed.

    Attributes:
        reason: the system's words, e.g. "No space left on device".
        path: the file that could not be written ("" when unknown).
    """

    def __init__(self, message: str, *, reason: str, path: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.path = path


class ControlError(StrettoError):
    """A control command (cancel, retry, pause, budget, ...) was refused; nothing changed."""

    exit_code = 2
