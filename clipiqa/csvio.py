"""CSV files that round-trip any file name, written atomically.

Every CSV that clipiqa writes (``clipiqa score``, ``adapt``'s ``history.csv``, ``bench``, ``explain``, the
labelling Session's export) goes through :func:`write_csv`, and tables of paths are read back with
:func:`read_csv`.

The encoding rule
-----------------
* The file is **UTF-8**, without a byte-order mark (a BOM is accepted when reading).
* Standard CSV quoting (RFC 4180, Python's ``csv`` module): a value holding a comma, a double quote, a line
  feed or a carriage return is put in double quotes, and a double quote inside it is doubled.
* Rows end with ``\\n``. When any value holds a carriage return (``\\r``), the rows of that file end with
  ``\\r\\n`` instead (RFC 4180's line ending), so the ``\\r`` inside the value is quoted and survives.
* A file name that is **not valid UTF-8** (possible on Linux and macOS) is written as its **raw bytes**:
  Python represents such a name as a ``str`` holding "surrogate escapes" (``os.fsdecode``), and the file is
  encoded and decoded with the ``surrogateescape`` error handler, which turns those back into the original
  bytes. So the bytes in the CSV are exactly the bytes of the name on disk, and
  ``read_csv(write_csv(x))["path"] == x["path"]`` for every name the operating system allows. A tool that
  reads such a file as strict UTF-8 shows those few bytes as replacement characters; every other value is
  plain UTF-8. A ``str`` that no file system can produce (a lone surrogate outside the escape range) is
  refused before anything is written, with the column and row named.
* Text columns (``path`` by default) are read back as text exactly as written: a file named ``NA``,
  ``nan``, ``007`` or ``1e3`` stays that string; other columns get pandas' usual parsing (numbers, empty
  cells as NaN).

Atomic writes
-------------
:func:`write_csv` (and :func:`atomic_write` for other files) writes to a temporary file in the target's
folder, fsyncs it, then renames it over the target (``os.replace``), so a reader sees either the old file or
the complete new one, never half a file. The new file keeps the mode of the file it replaces (a new file
gets the usual mode from the umask). After an exception the temporary file is removed; after a hard kill
(SIGKILL, power loss) it stays behind under a recognisable name, ``.<name>.<pid>.<random>.clipiqa-tmp``, and
the next write to the same target removes it once its process is gone.
"""
from __future__ import annotations

import contextlib
import csv
import io
import os
import secrets
import stat
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, Union

import pandas as pd

__all__ = ["ENCODING", "ERRORS", "TMP_SUFFIX", "atomic_path", "atomic_write", "read_csv", "to_csv_text",
           "write_csv"]

PathLike = Union[str, os.PathLike]

ENCODING = "utf-8"
ERRORS = "surrogateescape"
TMP_SUFFIX = ".clipiqa-tmp"
"""Temporary files of :func:`atomic_write` are named ``.<name>.<pid>.<random>`` + this suffix."""

STALE_SECONDS = 24 * 3600
"""A temporary file this old is removed by the next write even if a process with its pid is running."""

_NA_STRINGS = ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
               "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null")
"""pandas' default missing-value strings (used for the non-text columns)."""


# ------------------------------------------------------------------------------------------------ writing
def to_csv_text(frame: pd.DataFrame) -> str:
    """The CSV text of ``frame`` (no index) under the module's rule; raises ValueError for values that no
    file system can produce, naming the column and row."""
    _check_encodable(frame)
    text = frame.to_csv(index=False, lineterminator="\n")
    if "\r" in text:  # only values can hold a CR here: switch to CRLF rows so the csv writer quotes it
        text = frame.to_csv(index=False, lineterminator="\r\n")
    return text


def write_csv(frame: pd.DataFrame, path: PathLike | IO, *, atomic: bool = True) -> PathLike | IO:
    """Write ``frame`` (without its index) as CSV under the module's encoding rule.

    Args:
        frame: the table.
        path: a file path, or an open stream (``sys.stdout``: its binary buffer is used, so names that are
            not UTF-8 are written as their bytes too).
        atomic: write a temporary file and rename it over ``path`` (see :func:`atomic_write`); ``False``
            writes in place.

    Returns:
        ``path``.
    """
    data = to_csv_text(frame).encode(ENCODING, ERRORS)
    if hasattr(path, "write"):
        _write_stream(path, data)
    elif atomic:
        with atomic_write(path, binary=True) as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)
    return path


def _write_stream(stream: IO, data: bytes) -> None:
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:  # a text stream such as sys.stdout: write the bytes under it
        stream.flush()
        buffer.write(data)
        buffer.flush()
    elif isinstance(stream, io.TextIOBase):
        stream.write(data.decode(ENCODING, ERRORS))
    else:
        stream.write(data)


def _check_encodable(frame: pd.DataFrame) -> None:
    for name in frame.columns:
        _encode_or_explain(str(name), "the header", name)
    for name in frame.columns:
        column = frame[name]
        if column.dtype.kind in "biufcmM":
            continue
        for row, value in enumerate(column.array):
            if isinstance(value, str):
                _encode_or_explain(value, f"row {row + 1}", name)


def _encode_or_explain(value: str, where: str, column: Any) -> None:
    try:
        value.encode(ENCODING, ERRORS)
    except UnicodeEncodeError as e:
        raise ValueError(f"cannot write column {column!r}, {where}: the value {value!r} holds the character "
                         f"{value[e.start]!r}, which is no byte sequence a file name can have (a lone surrogate); "
                         "fix the value or pass the name as bytes through os.fsdecode") from None


# ---------------------------------------------------------------------------------------- atomic files
@contextlib.contextmanager
def atomic_write(path: PathLike, *, binary: bool = False) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` atomically.

    Text mode uses UTF-8 with ``surrogateescape`` and ``newline=""`` (write ``\\n`` yourself). The file is
    fsynced before the rename and the folder after it. The result keeps the mode of the file it replaces;
    a symlink is followed (its target is replaced, the link stays). On any exception (including
    KeyboardInterrupt) the temporary file is removed and ``path`` is left as it was.
    """
    with atomic_path(path) as tmp:
        f = open(tmp, "wb") if binary else open(tmp, "w", encoding=ENCODING, errors=ERRORS, newline="")
        with f:
            yield f


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[str]:
    """Like :func:`atomic_write`, for writers that want a file *name* (``safetensors.torch.save_file``).

    Yields the name of a new, empty temporary file beside ``path`` (created with the umask's mode, then given
    the mode of the file it will replace). When the block ends without an exception the file is fsynced and
    renamed over ``path`` and the folder is fsynced; otherwise the temporary file is removed.
    """
    target = os.path.realpath(os.fspath(path)) if os.path.islink(os.fspath(path)) else os.fspath(path)
    folder, name = os.path.split(os.path.abspath(target))
    cleanup_stale_temps(folder, name)
    tmp = os.path.join(folder, f"{_tmp_prefix(name)}{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
    try:
        try:
            _keep_mode(fd, target)
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
            if stat.S_IMODE(os.fstat(fd).st_mode) != mode:  # a writer that made its own file (mkstemp: 0600)
                os.chmod(tmp, mode)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)


def _tmp_prefix(name: str) -> str:
    """``.<name>.`` with the name shortened to 100 bytes so the temporary name fits NAME_MAX."""
    short = os.fsdecode(os.fsencode(name)[:100])
    return f".{short}."


def _keep_mode(fd: int, target: str) -> None:
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        return
    os.fchmod(fd, mode)


def _fsync_folder(folder: str) -> None:
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def cleanup_stale_temps(folder: PathLike, name: str) -> list[str]:
    """Remove temporary files of earlier writes to ``folder/name`` whose process is gone (or that are older
    than :data:`STALE_SECONDS`); returns the removed paths."""
    prefix = _tmp_prefix(name)
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not (entry.name.startswith(prefix) and entry.name.endswith(TMP_SUFFIX)):
            continue
        pid_text = entry.name[len(prefix):-len(TMP_SUFFIX)].split(".", 1)[0]
        if not pid_text.isdigit() or (_alive(int(pid_text)) and not _old(entry)):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(entry.path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _old(entry: os.DirEntry) -> bool:
    try:
        return time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_SECONDS
    except OSError:
        return False


# ------------------------------------------------------------------------------------------------ reading
def read_csv(path: PathLike | IO, *, text_columns: Iterable[str] = ("path",), **kwargs: Any) -> pd.DataFrame:
    """Read a CSV written by :func:`write_csv` (or any UTF-8 CSV) back into a DataFrame.

    ``text_columns`` that are present are read as strings exactly as written (no NaN conversion, no number
    parsing); the other columns are parsed as pandas does by default. Other keyword arguments go to
    :func:`pandas.read_csv` (passing ``na_values`` or ``keep_default_na`` yourself switches the per-column
    handling off).
    """
    text_columns = list(text_columns)
    kwargs.setdefault("encoding", "utf-8-sig")
    kwargs.setdefault("encoding_errors", ERRORS)
    if text_columns and "na_values" not in kwargs and "keep_default_na" not in kwargs:
        header = _header(path, kwargs)
        if header is not None:
            present = [c for c in text_columns if c in header]
            dtype = kwargs.get("dtype")
            if isinstance(dtype, dict) or dtype is None:
                kwargs["dtype"] = {**(dtype or {}), **{c: str for c in present}}
            kwargs["keep_default_na"] = False
            kwargs["na_values"] = {c: list(_NA_STRINGS) for c in header if c not in present}
    return pd.read_csv(path, **kwargs)


def _header(path: PathLike | IO, kwargs: dict) -> list[str] | None:
    """The column names of the first row, or None when they cannot be peeked (a non-seekable stream, or
    options that change what the first row is)."""
    if any(k in kwargs for k in ("header", "names", "skiprows", "sep", "delimiter", "usecols", "index_col")):
        return None
    if hasattr(path, "read"):
        return None
    try:
        with open(path, encoding=kwargs["encoding"], errors=kwargs["encoding_errors"], newline="") as f:
            return next(csv.reader(f), None)
    except (OSError, csv.Error, UnicodeError, TypeError):
        return None

