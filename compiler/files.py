"""Writing files safely: the one atomic writer of the toolkit and the one output-path check.

Every file a command writes goes through :func:`atomic_file` (or :func:`atomic_write` /
:func:`atomic_dir`): the content goes to a hidden temporary ``.NAME.<pid>.<n>.tmp`` in the
**target** directory, is flushed and fsynced, and only then renamed over ``NAME`` (a rename
within one directory is atomic; a copy across file systems is not). A killed writer leaves at
most its temporary, which the next write of the same name (or :func:`remove_stale_temps_in`)
removes; a failed write (disk full, I/O error, read-only) removes it and raises
:class:`WriteError`, a ``ConfigError``, so every command reports it in one paragraph with
exit code 2. Files get the user's normal mode, ``0666 & ~umask`` (folders ``0777 & ~umask``),
whatever library produced them.
"""

from __future__ import annotations

import errno
import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Literal

from .errors import ConfigError

_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?P<n>\d+)(?P<old>\.old)?\.tmp$")


class WriteError(ConfigError):
    """A file could not be written (disk full, I/O error, read-only folder); nothing was
    left half-written and an earlier file of that name is intact."""


def umask() -> int:
    """The process umask (read without changing it for longer than a call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    return 0o666 & ~umask()


def folder_mode() -> int:
    return 0o777 & ~umask()


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError behind an exception (torch reports a failed write as a RuntimeError whose
    context is the OSError)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _raise_as_write_error(path: Path, exc: BaseException) -> None:
    """Raise a failed write of ``path`` (an OS error, also one a library wrapped) as
    :class:`WriteError`; return for anything else (an interrupt, a ``ConfigError``, a bug),
    which the caller re-raises as it is."""
    cause = _os_error(exc)
    if cause is not None and isinstance(exc, Exception) and not isinstance(exc, ConfigError):
        raise write_error(path, cause) from None


def write_error(path: Path, exc: OSError) -> WriteError:
    reason = exc.strerror or str(exc)
    hint = ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "; free some space and run the command again"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "; the folder is not writable"
    return WriteError(f"cannot write {path}: {reason}{hint} (nothing was half-written)")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        import shutil  # rarely needed: kept out of every command's start-up

        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temps_in(
    directory: Path, name: str | None = None, any_owner: bool = False
) -> list[Path]:
    """Remove the temporaries (of ``name``, or of every name) that killed writers left in
    ``directory``; ``any_owner`` also removes those of live processes (the caller holds the
    directory's lock). A replaced original parked by a writer killed mid-swap is put back."""
    removed: list[Path] = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP.match(entry.name)
        if match is None or (name is not None and match["name"] != _stem(name)):
            continue
        if not any_owner and _pid_alive(int(match["pid"])):
            continue
        try:
            if match["old"]:
                # a parked original goes back under its name (known when given, or when the
                # temporary carries it whole); one whose name was shortened is left alone
                shortened = len(os.fsencode(match["name"])) >= _STEM_BYTES
                if name is None and shortened:
                    continue
                target = directory / (name or match["name"])
                if not (target.exists() or target.is_symlink()):
                    entry.rename(target)
                    continue
            _remove(entry)
        except OSError:
            continue
        removed.append(entry)
    return removed


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the temporaries of ``path`` that killed writers left beside it."""
    return remove_stale_temps_in(path.parent, path.name)


#: Bytes of a target's name kept in its temporaries' names, so that a target whose name is
#: near the file-system limit still gets one.
_STEM_BYTES = 64


def _stem(name: str) -> str:
    """The part of a target's name its temporaries carry (the whole name when short)."""
    return os.fsencode(name)[:_STEM_BYTES].decode("utf-8", "ignore") or "out"


def _temp_names(path: Path, suffix: str = "") -> Iterator[Path]:
    """Candidate temporary paths beside ``path``: the one naming scheme, which
    :func:`remove_stale_temps_in` reads back."""
    stem = _stem(path.name)
    for attempt in range(1000):
        yield path.with_name(f".{stem}.{os.getpid()}.{attempt}{suffix}.tmp")


def _temp_path(path: Path, suffix: str = "") -> Path:
    for tmp in _temp_names(path, suffix):
        if not (tmp.exists() or tmp.is_symlink()):
            return tmp
    raise FileExistsError(f"cannot find a free temporary name beside {path}")


def create_temp(path: Path) -> tuple[int, Path]:
    """A new hidden temporary file beside ``path``, created with mode 0666 & ~umask."""
    for tmp in _temp_names(path):
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file beside {path}")


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (not every file system supports it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _prepare_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(path, exc) from None
    remove_stale_temps(path)


@contextmanager
def atomic_file(path: Path, binary: bool = True) -> Iterator[IO]:
    """An open temporary file beside ``path`` that replaces ``path`` once the block ends
    without error (after flush and fsync); on any error the temporary is removed and an
    existing ``path`` is left as it was. OS errors become :class:`WriteError`."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a directory; refusing to replace it with a file")
    _prepare_parent(path)
    try:
        fd, tmp = create_temp(path)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        with os.fdopen(
            fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})
        ) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        _raise_as_write_error(path, exc)
        raise
    _fsync_folder(path.parent)


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path, binary=isinstance(data, bytes)) as handle:
        handle.write(data)


def _finite(data: Any) -> Any:
    """``data`` with NaN and infinite floats as None."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v) for v in data]
    return data


def json_text(data: Any) -> str:
    """Indented strict JSON of ``data``: NaN and infinities become null, since JSON has none
    (``NaN`` would make the file unreadable to strict parsers)."""
    import json  # here: mtl-make-config writes no JSON, and its start-up time counts

    return json.dumps(_finite(data), indent=2, allow_nan=False) + "\n"


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as strict JSON (:func:`json_text`), atomically."""
    atomic_write(path, json_text(data))


def write_all_atomic(files: list[tuple[Path, str]]) -> None:
    """Write several files: every one is written in full (and fsynced) to a temporary file
    beside its target first, and only then are they all renamed into place (a failure leaves
    none); temporaries come from :func:`create_temp`."""
    temps: list[Path] = []
    try:
        for path, text in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = create_temp(path)
            temps.append(tmp)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
        for (path, _), tmp in zip(files, temps, strict=True):
            tmp.replace(path)
    except BaseException as exc:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise write_error(Path(exc.filename or files[0][0]), exc) from None
        raise


def normalize_modes(root: Path) -> None:
    """Give ``root`` and everything under it the user's normal modes (libraries and
    ``mkdtemp`` create some files 0600 and folders 0700)."""
    files, folders = file_mode(), folder_mode()
    root.chmod(folders if root.is_dir() else files)
    if root.is_dir():
        for base, dirs, names in os.walk(root):
            for d in dirs:
                Path(base, d).chmod(folders)
            for n in names:
                Path(base, n).chmod(files)


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """A temporary folder beside ``path`` that replaces ``path`` once the block ends without
    error (modes normalized, files fsynced); on error it is removed and ``path`` is kept."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} is a file; refusing to replace it with a directory")
    _prepare_parent(path)
    try:
        tmp = _temp_path(path)
        tmp.mkdir()
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        yield tmp
        normalize_modes(tmp)
        for base, _, names in os.walk(tmp):
            for n in names:
                fd = os.open(Path(base, n), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        old = None
        if path.exists() or path.is_symlink():
            old = _temp_path(path, ".old")
            path.rename(old)
        tmp.rename(path)
        if old is not None:
            _remove(old)
        _fsync_folder(path.parent)
    except BaseException as exc:
        _raise_as_write_error(path, exc)
        raise
    finally:
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


def _nearest_existing(path: Path) -> Path:
    current = path.absolute()
    while not (current.exists() or current.is_symlink()) and current != current.parent:
        current = current.parent
    return current


def check_output(
    path: Path,
    kind: Literal["file", "dir"] = "file",
    *,
    flag: str | None = None,
    replace: bool = True,
) -> None:
    """Refuse an output path before any work is done: a directory where a file goes (never
    replaced, whatever ``--force`` says), a file where a directory goes, an existing output
    when ``replace`` is False, a parent that is a file or not writable."""
    path = Path(path)
    what = f"{flag} {path}" if flag else str(path)
    if kind == "file" and path.is_dir():
        raise ConfigError(
            f"{what} is an existing directory; give a file path "
            "(a directory is never replaced by a file)"
        )
    if kind == "dir" and (path.exists() or path.is_symlink()) and not path.is_dir():
        raise ConfigError(f"{what} is an existing file, not a directory; give a directory path")
    if (path.exists() or path.is_symlink()) and not replace:
        raise ConfigError(f"{what} already exists; pass --force to replace it")
    folders = {_nearest_existing(path.parent)}
    if kind == "dir":  # written into, too
        folders.add(_nearest_existing(path))
    for folder in sorted(folders):
        if not folder.is_dir():
            raise ConfigError(f"{what}: {folder} is a file, so nothing can be written under it")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(
                f"{what}: the folder {folder} is not writable (read-only or no permission)"
            )
