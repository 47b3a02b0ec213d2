"""File helpers. Atomic writes: a crash or a full disk leaves the old file or the new one, never
half. And content digests, to tell whether a file changed since a run recorded it."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickletools
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

from netsurgeon.errors import ConfigError, WriteError, find_in_chain

__all__ = [
    "as_write_error",
    "atomic_open",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_file_target",
    "check_folder_target",
    "describe_torch_file",
    "exported_format",
    "fsync_folder",
    "make_temporary",
    "remove_stale_temporaries",
    "sha256_file",
]

# The first bytes of the files torch.save writes: a zip archive (the default since PyTorch 1.6)
# or, in the legacy format, a pickle stream (protocol 2 or higher starts with 0x80).
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"


def _tmp_prefix(path: Path) -> str:
    # The writer's process id is in the name, so that a later write can tell a temporary
    # file left by a killed process (remove it) from one another process is writing now.
    return f".{path.name}.{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to another user
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files that killed writers of ``path`` left beside it.

    :func:`atomic_open` and the exporters write ``.NAME.PID-RANDOM.tmp`` beside ``NAME`` and
    rename it at the end; a process killed before that leaves it behind (up to a whole
    checkpoint). Those of processes that no longer run are removed; a live writer's are kept.

    Returns:
        The files and folders removed.
    """
    path = Path(path)
    # mkstemp/mkdtemp add 8 characters from [a-z0-9_]: exactly, so that the temporary of
    # "NAME.2024-06-01" is not taken for one of NAME by a process 2024.
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)-[a-z0-9_]{{8}}\.tmp")
    removed: list[Path] = []
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return removed
    for sibling in siblings:
        match = pattern.fullmatch(sibling.name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        with contextlib.suppress(OSError):
            if sibling.is_dir() and not sibling.is_symlink():
                shutil.rmtree(sibling)
            else:
                sibling.unlink()
            removed.append(sibling)
    return removed


def make_temporary(path: Path, *, folder: bool = False) -> Path:
    """A new temporary file (or folder) beside ``path``, after removing stale ones.

    Raises:
        WriteError: The folder cannot be created or written.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        if folder:
            return Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent))
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _write_error(exc, path) from exc
    os.close(fd)
    return Path(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """Open a temporary file beside ``path`` for binary writing; rename it over ``path`` on exit.

    The data is fsynced before the rename, and the folder after it, so the new file survives a
    power cut. If the block raises, the temporary file is removed and ``path`` is untouched.
    Temporary files of earlier writers that were killed are removed first
    (:func:`remove_stale_temporaries`).

    Raises:
        WriteError: The file cannot be written (a full disk, a read-only folder...); ``path``
            is untouched.
    """
    path = Path(path)
    tmp = make_temporary(path)
    try:
        if hasattr(os, "chmod"):  # mkstemp makes owner-only files; give the usual permissions
            os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        error = as_write_error(exc, path)
        if error is not None:
            raise error from exc
        raise
    fsync_folder(path.parent)


def fsync_folder(folder: str | os.PathLike[str]) -> None:
    """Make a rename into ``folder`` durable, where folders can be opened (not everywhere)."""
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _os_error_in(exc: BaseException) -> OSError | None:
    """The OSError behind a failed write: ``exc`` itself, or what torch.save's RuntimeError
    ("unexpected pos ...") was raised while handling (a full disk, a file size limit)."""
    if isinstance(exc, WriteError):
        return None  # already explained
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, RuntimeError):
        return find_in_chain(exc.__cause__ or exc.__context__, OSError, depth=5)
    return None


def as_write_error(exc: BaseException, path: str | os.PathLike[str]) -> WriteError | None:
    """The :class:`WriteError` that explains a failed write of ``path``, or ``None``.

    ``None`` when ``exc`` holds no OSError (it is not about writing) or is a WriteError already.
    """
    cause = _os_error_in(exc)
    return None if cause is None else _write_error(cause, Path(path))


def _write_error(cause: OSError, path: Path) -> WriteError:
    return WriteError(cause.errno, cause.strerror or type(cause).__name__, str(path))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path) as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save(obj)`` to ``path`` atomically."""
    with atomic_open(path) as handle:
        torch.save(obj, handle)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The SHA-256 hex digest of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def exported_format(path: str | os.PathLike[str]) -> str | None:
    """``"a TorchScript archive"`` or ``"an ONNX model"`` when ``path`` is one, else ``None``.

    Both are what ``netsurgeon export`` writes, and neither is a file ``torch.load`` reads.
    """
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return "an ONNX model"
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                # torch.jit.save writes code/ and constants.pkl; torch.save writes neither.
                names = archive.namelist()
                if any("/code/" in n for n in names) and any(
                    n.endswith("/constants.pkl") for n in names
                ):
                    return "a TorchScript archive"
    except (OSError, zipfile.BadZipFile):
        return None
    return None


def describe_torch_file(path: str | os.PathLike[str]) -> str:
    """What a file that ``torch.load`` could not read looks like, in a few words.

    Used in error messages, so that "corrupt" says which kind: an empty file, a PyTorch file
    cut short (a copy or a save interrupted), or a file of another kind altogether.

    Returns:
        For example ``"an empty file (0 bytes)"``, ``"a truncated or damaged PyTorch file
        (1,234 bytes)"`` or ``"a text file (56 bytes)"``.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(512)
    except OSError as exc:
        return f"unreadable ({exc.strerror or type(exc).__name__})"
    if size == 0:
        return "an empty file (0 bytes)"
    if head.startswith(_PICKLE_MAGIC) and _is_one_whole_pickle(path, size):
        return f"a pickle file not written by torch.save ({size:,} bytes)"
    if head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_MAGIC):
        return f"a truncated or damaged PyTorch file ({size:,} bytes)"
    if b"\x00" in head:  # text has no NUL bytes; binary formats nearly always do
        return f"a file of another format ({size:,} bytes)"
    return f"a text file ({size:,} bytes)"


def _is_one_whole_pickle(path: Path, size: int) -> bool:
    """True for a file that is exactly one complete pickle (``pickle.dump``'s output).

    torch.save's legacy format is several pickles in a row, and a cut-off one has no end, so
    neither passes. The opcodes are only read (``pickletools``), never executed.
    """
    if size > 64 * 2**20:  # the message is not worth reading a large file
        return False
    try:
        data = path.read_bytes()
        *_, (last, _arg, position) = pickletools.genops(data)
    except Exception:  # any malformed stream: not a whole pickle
        return False
    return last.name == "STOP" and position == len(data) - 1


def check_file_target(path: str | os.PathLike[str], what: str) -> Path:
    """Fail before any slow work when a file cannot be written at ``path`` later.

    A missing parent folder is fine (:func:`atomic_open` creates it); a folder at ``path``,
    a file where a parent folder should be, or a folder that cannot be written (a read-only
    mount, no permission) is not.

    Args:
        path: Where a file will be written.
        what: How the message names it, e.g. ``"--checkpoint"``.

    Raises:
        ConfigError: ``path`` is a folder, one of its parents is a file, or the nearest
            existing folder cannot be written.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {str(path)!r} is a folder; give a file name")
    _check_parents(path, what)
    return path


def check_folder_target(path: str | os.PathLike[str], what: str) -> Path:
    """Fail before any slow work when a folder cannot be used or created at ``path`` later.

    An existing folder, or a missing one whose nearest existing parent is a folder, is fine
    when it can be written.

    Args:
        path: The folder that will be written to.
        what: How the message names it, e.g. ``"--out"``.

    Raises:
        ConfigError: ``path`` is an existing file, one of its parents is a file, or the folder
            (or its nearest existing parent) cannot be written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {str(path)!r} is an existing file; give a folder name")
    if path.is_dir():
        _check_writable(path, path, what)
    else:
        _check_parents(path, what)
    return path


def _check_parents(path: Path, what: str) -> None:
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{what} {str(path)!r}: {str(parent)!r} is a file, not a folder")
            _check_writable(parent, path, what)
            break


def _check_writable(folder: Path, path: Path, what: str) -> None:
    """Create and remove a file in ``folder``: the one sure test (permissions, ACLs, a
    read-only mount), where ``os.access`` misses read-only mounts or answers yes for root."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".netsurgeon-probe-", dir=folder)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"{what} {str(path)!r}: cannot write in {str(folder)!r} ({reason}); "
            "choose another location"
        ) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
