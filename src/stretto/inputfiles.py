"""Reading a file the user wrote (a plan, ``stretto.toml``): bounded, with located errors.

A path given on the command line can be anything: a directory, a FIFO that blocks forever,
``/dev/zero`` that never ends, a log of many gigabytes. Only a regular file (or a link to one)
is read, and at most ``limit`` bytes of it. Its text must be UTF-8: a UTF-8 byte-order mark is
dropped, a UTF-16 file is named as such, and a byte that is not UTF-8 is reported at its line
and column.
"""

from __future__ import annotations

import codecs
import os
import stat
from pathlib import Path

from stretto.errors import Diagnostic, InputError


def read_input(path: Path, limit: int, error: type[InputError], *, what: str) -> bytes:
    """The bytes of the ``what`` file at ``path`` (at most ``limit``).

    Raises:
        error: with one Diagnostic when the file is missing, unreadable, not a regular file or
            larger than ``limit``.
    """

    def refuse(message: str) -> InputError:
        return error([Diagnostic(str(path), 0, 0, "", message)])

    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise refuse(
                f"is a symlink to {os.readlink(path)}, which does not exist; fix or remove it"
            ) from None
        raise refuse("file not found; check the path") from None
    except OSError as exc:
        raise refuse(f"cannot read: {exc.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise refuse(f"is a directory; give the path of a {what} file")
    if not stat.S_ISREG(info.st_mode):
        raise refuse(
            f"is not a regular file (a device, pipe or socket); give the path of a {what} file"
        )
    too_big = (
        f"is larger than {limit:,} bytes, the most a {what} file may have; no {what} is "
        "that large: check that this is the right file"
    )
    if info.st_size > limit:
        raise refuse(too_big)
    try:
        with path.open("rb") as handle:
            raw = handle.read(limit + 1)
    except OSError as exc:
        raise refuse(f"cannot read: {exc.strerror}") from None
    if len(raw) > limit:  # it grew since stat()
        raise refuse(too_big)
    return raw


def decode_utf8(raw: bytes, file: str, error: type[InputError]) -> str:
    """``raw`` as text, without a UTF-8 byte-order mark.

    Raises:
        error: naming the line and column of the first byte that is not UTF-8.
    """
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        message = "is UTF-16 text, not UTF-8 (it starts with a UTF-16 byte-order mark)"
        raise error([Diagnostic(file, 1, 1, "", f"{message}; save it as UTF-8")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - raw.rfind(b"\n", 0, exc.start)
        message = f"not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8"
        raise error([Diagnostic(file, line, column, "", message)]) from None
    return text.removeprefix("\ufeff")
