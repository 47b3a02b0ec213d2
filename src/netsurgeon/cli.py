"""The ``netsurgeon`` command: thin subcommands over library calls.

Each capability registers its own subcommands (``netsurgeon.pruning.cli``,
``netsurgeon.oov.cli``, ...). User errors (:class:`~netsurgeon.errors.NetsurgeonError`)
become one line on stderr and exit status 2; anything else is a bug and keeps its traceback.
Ctrl-C (SIGINT) and SIGTERM stop a command with one line saying how to continue it, exit
status 130 and 143 as a shell reports them.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from netsurgeon import __version__
from netsurgeon.commands import COMMANDS
from netsurgeon.errors import ConfigError, NetsurgeonError, WriteError, find_in_chain


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line, like netsurgeon's own user errors.

    Subcommand parsers inherit the class (``add_subparsers`` uses the parent's type).
    """

    def error(self, message: str) -> NoReturn:
        _say_error(f"netsurgeon: error: {message} (see `{self.prog} --help`)")
        self.exit(2)


def build_parser(words: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """Build the top-level parser with every registered subcommand.

    Args:
        words: The command line to be parsed. When given, only the module of the command it
            names is loaded; every other command is listed by name and help only. (The
            command modules import PyTorch only when a command runs, so help and option
            errors come at once.) None loads every command.
    """
    parser = _Parser(
        prog="netsurgeon",
        description="Prune CNNs and predict embeddings for out-of-vocabulary words.",
    )
    parser.add_argument("--version", action="version", version=f"netsurgeon {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    # The first word that is not an option names the command: the top level has only flags.
    chosen = None if words is None else next((w for w in words if not w.startswith("-")), "")
    for module_name in dict.fromkeys(c.module for c in COMMANDS.values()):
        commands = [name for name, c in COMMANDS.items() if c.module == module_name]
        if chosen is not None and chosen not in commands:
            for command in commands:  # listed in the help; never run, since not chosen
                subparsers.add_parser(command, help=COMMANDS[command].help, add_help=False)
            continue
        extra, needs = COMMANDS[commands[0]].extra, COMMANDS[commands[0]].needs
        missing = next((name for name in needs if not _installed(name)), None)
        if extra is not None and missing is not None:
            for command in commands:
                _add_missing_extra(subparsers, command, extra, missing)
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):  # capability not installed yet
                continue
            if extra is None or not exc.name or exc.name.split(".")[0] == "netsurgeon":
                raise
            for command in commands:  # an optional dependency is missing: say which extra
                _add_missing_extra(subparsers, command, extra, exc.name)
            continue
        module.add_commands(subparsers)
    return parser


def _installed(name: str) -> bool:
    """Whether the top-level package ``name`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # ValueError: sys.modules[name] is None (blocked)
        return False


def _add_missing_extra(
    subparsers: argparse._SubParsersAction, command: str, extra: str, missing: str
) -> None:
    """A stand-in for ``command`` whose optional dependency ``missing`` is not installed."""
    # No option prefix: every argument, options included, is taken as-is and then refused.
    stub = subparsers.add_parser(
        command,
        help=f"(needs the {extra} extra: pip install 'netsurgeon[{extra}]')",
        prefix_chars="\0",
        add_help=False,
    )
    stub.add_argument("rest", nargs="*", help=argparse.SUPPRESS)

    def refuse(_args: argparse.Namespace) -> int:
        raise ConfigError(
            f"`netsurgeon {command}` needs the {extra} extra ({missing} is not installed): "
            f"pip install 'netsurgeon[{extra}]'"
        )

    stub.set_defaults(func=refuse)


# Commands that continue a stopped run when rerun as they were.
_RERUN_RESUMES = frozenset({"sweep", "compare-models", "demo"})


def _resume_hint(args: argparse.Namespace) -> str:
    """How to continue the interrupted command, or "" where there is nothing to continue."""
    if _saved_nothing(args):
        return ""
    if args.command in _RERUN_RESUMES:
        return "; finished runs are saved: rerun the same command to continue after them"
    resumable = hasattr(args, "resume") and (args.command != "prune" or args.data is not None)
    if resumable:
        done = "slices and epochs" if args.command == "prune" else "epochs"
        return f"; finished {done} are saved: rerun the command with --resume to continue"
    return ""


def _saved_nothing(args: argparse.Namespace) -> bool:
    """Whether the command's progress files are known not to exist (stopped before its first
    epoch, slice or trial ended), so that no resume hint would be true."""
    out = getattr(args, "out", None)
    if not isinstance(out, Path):
        return False
    # The commands' own modules are loaded by now: they ran.
    if args.command == "finetune":
        from netsurgeon.vision.iterative import default_checkpoint_path

        checkpoint = getattr(args, "checkpoint", None) or default_checkpoint_path(out)
        return not Path(checkpoint).exists()
    if args.command == "prune" and getattr(args, "data", None) is not None:
        from netsurgeon.vision.iterative import default_progress_dir

        folder = getattr(args, "checkpoint_dir", None) or default_progress_dir(out)
        return not any(Path(folder).glob("*"))
    if args.command == "oov" and getattr(args, "oov_command", None) == "train":
        from netsurgeon.oov.run import CHECKPOINT_FILE

        return not (out / CHECKPOINT_FILE).exists()
    if args.command in _RERUN_RESUMES or getattr(args, "oov_command", None) == "experiment":
        # Anything but the configuration written at the start is a finished part.
        return not any(p.is_file() and p.name != "config.json" for p in out.rglob("*"))
    return False


def _single_process_only(args: argparse.Namespace) -> str:
    """Why this command cannot run under torchrun, or "" when it can (or is not under it)."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return ""
    if world_size <= 1 or args.command == "finetune":
        return ""
    if args.command == "prune" and getattr(args, "data", None) is not None:
        return ""
    name = " ".join(n for n in (args.command, getattr(args, "oov_command", None)) if n)
    # Every process would run the whole command and write the same files.
    return (
        f"'netsurgeon {name}' runs in one process, not under torchrun (WORLD_SIZE="
        f"{world_size}); only 'finetune' and 'prune --data' use several processes"
    )


def _format_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    line: str | None = None,
) -> str:
    # One line like the errors, without the source line that Python's format shows.
    return f"netsurgeon: warning: {message}\n"


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (``kill``, a job scheduler, torchrun stopping its workers).

    A :class:`KeyboardInterrupt`, so that it unwinds the same way as Ctrl-C: every write in
    progress is abandoned atomically and finished work stays on disk.
    """


# The stop signals (SIGINT, SIGTERM) that arrived while main() ran.
_STOPS: list[int] = []
# The SIGCHLD handler that a stop set aside, to put back when main() returns.
_SIGCHLD_SET_ASIDE: list[Any] = []
# The stop handlers main() installed, with the actions they replaced (signal, action).
_INSTALLED: list[tuple[int, Any]] = []


def _uninstall_in_child() -> None:
    # A forked child (a data loader's worker) inherits Python's handlers. With them a stop sent
    # to the process group made a worker unwind instead of dying. The child gets the actions
    # it would have had without netsurgeon.
    if not _INSTALLED:
        return
    for signum, default in _INSTALLED:
        with suppress(ValueError, OSError):  # forked from a thread without signals
            signal.signal(signum, default)
    _INSTALLED.clear()
    sys.excepthook = _quiet_lost_peer(sys.excepthook)


# What multiprocessing's fd-sharing thread meets when the process it hands a batch to goes
# away mid-transfer: end of file, a reset or broken connection, a handshake cut short.
_LOST_PEER = (EOFError, OSError, multiprocessing.AuthenticationError)


def _quiet_lost_peer(hook: Any) -> Any:
    """``hook`` without the report of a worker's fd-sharing thread that lost its peer.

    A loader worker forked just before a stop, or still sending a batch when the main process
    stopped, has its batch's file descriptor fetched by a process that is gone: the sharing
    thread prints that error before the worker is ended, after the main process's one-line
    message. The main process owns the run, and nothing is lost, so it is not reported.
    """

    def excepthook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if issubclass(kind, _LOST_PEER) and _raised_in_resource_sharer(tb):
            return
        hook(kind, value, tb)

    return excepthook


def _raised_in_resource_sharer(tb: Any) -> bool:
    where = ("multiprocessing", "resource_sharer.py")
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).parts[-2:] == where:
            return True
        tb = tb.tb_next
    return False


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_uninstall_in_child)


def _stop(signum: int) -> None:
    _STOPS.append(signum)
    # Loader workers die with a stop sent to the process group. PyTorch's SIGCHLD handler
    # would raise "worker killed" for each wherever the unwinding is, even inside the final
    # message; they are the stop's doing, so it goes until main() returns.
    sigchld = getattr(signal, "SIGCHLD", None)
    if sigchld is not None and not _SIGCHLD_SET_ASIDE:
        handler = signal.getsignal(sigchld)
        if callable(handler):
            _SIGCHLD_SET_ASIDE.append(handler)
            signal.signal(sigchld, signal.SIG_DFL)


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    _stop(signum)
    raise Terminated


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    _stop(signum)
    raise KeyboardInterrupt


@contextmanager
def _stops_unwind() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Terminated` instead of killing at once,
    and both it and Ctrl-C are recorded, so that what they cause later is known as theirs.

    A signal sent to the whole process group (a scheduler, ``kill -- -PGID``) also stops the
    data loader's worker processes; the loader then reports them dead, as a RuntimeError in
    place of the stop or as "Exception ignored" noise while it is cleaned up. After a stop
    both are taken as the stop's consequence: one line, not a traceback.

    Handlers are only installed where the signal still has its default action and in the main
    thread (where Python runs them); the previous ones come back afterwards, and forked children
    start with them (a worker that a stop reaches dies as it would without netsurgeon).
    """
    _STOPS.clear()
    first = len(_INSTALLED)  # this block's own installs follow, to undo on exit
    if threading.current_thread() is threading.main_thread():
        wanted = (
            (signal.SIGTERM, signal.SIG_DFL, _raise_terminated),
            (signal.SIGINT, signal.default_int_handler, _raise_interrupted),
        )
        for signum, default, handler in wanted:
            try:
                if signal.getsignal(signum) is default:
                    signal.signal(signum, handler)
                    _INSTALLED.append((signum, default))
            except (ValueError, OSError):  # pragma: no cover - no signals here
                pass
    previous_hook = sys.unraisablehook

    def quiet_after_stop(unraisable: Any) -> None:
        if not _STOPS:
            previous_hook(unraisable)

    sys.unraisablehook = quiet_after_stop
    try:
        yield
    finally:
        if _STOPS:
            gc.collect()  # clean up the stopped loaders while their noise is still muted
        sys.unraisablehook = previous_hook
        for signum, default in _INSTALLED[first:]:
            signal.signal(signum, default)
        del _INSTALLED[first:]
        if _SIGCHLD_SET_ASIDE:
            signal.signal(signal.SIGCHLD, _SIGCHLD_SET_ASIDE.pop())


def _stop_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The stop that ``exc`` comes from: a stop signal arrived, or Ctrl-C or SIGTERM is in
    its chain (an error raised while the stop unwound, e.g. a killed loader worker)."""
    stop = find_in_chain(exc, KeyboardInterrupt)
    if stop is not None:
        return stop
    if _STOPS:
        return Terminated() if _STOPS[0] == signal.SIGTERM else KeyboardInterrupt()
    return None


def _say_once(text: str) -> None:
    """Print to stderr, once: under torchrun only on rank 0."""
    if os.environ.get("RANK", "0") == "0":
        sys.stderr.write(text + "\n")


# How long a process other than rank 0 waits before it reports an error. When rank 0 fails
# too, torchrun stops the other processes meanwhile, so an error they all meet shows once.
_PEER_ERROR_DELAY_S = 5.0


def _say_error(text: str) -> None:
    """Print an error line to stderr; under torchrun, once for an error every process meets.

    The processes run the same command on the same files, so they usually fail alike. Rank 0
    prints at once. Another rank waits first, and torchrun stops it when rank 0 has failed; an
    error of its own still shows after the wait, with the rank named.
    """
    rank = os.environ.get("RANK", "0")
    # As init_distributed: torchrun's processes have WORLD_SIZE > 1; a RANK alone is not one.
    if rank != "0" and os.environ.get("WORLD_SIZE", "1").strip() not in ("", "0", "1"):
        try:
            time.sleep(_PEER_ERROR_DELAY_S)
        except KeyboardInterrupt:  # torchrun's SIGTERM: rank 0 failed and says why
            return
        text = text.replace("netsurgeon: error:", f"netsurgeon: error (rank {rank}):", 1)
    sys.stderr.write(text + "\n")  # one write, so that lines of several processes do not mix


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    words = list(sys.argv[1:] if argv is None else argv)
    if words == ["--version"]:  # answered without loading the commands (and PyTorch)
        print(f"netsurgeon {__version__}")
        return 0
    with _stops_unwind():
        try:
            # A Ctrl-C while the command loads is as welcome as later: nothing has started.
            parser = build_parser(words)
        except KeyboardInterrupt as exc:
            _say_once(f"netsurgeon: {_stop_word(exc)}")
            return _stop_status(exc)
        args = parser.parse_args(words)
        if not hasattr(args, "func"):
            parser.print_help()
            return 2
        refusal = _single_process_only(args)
        if refusal:
            _say_error(f"netsurgeon: error: {refusal}")
            return 2
        return _run(args)


def _stop_word(exc: KeyboardInterrupt) -> str:
    return "terminated" if isinstance(exc, Terminated) else "interrupted"


def _stop_status(exc: KeyboardInterrupt) -> int:
    # 128 + the signal's number, as a shell reports a process that signal ended.
    return 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)


def _run(args: argparse.Namespace) -> int:
    try:
        return _dispatch(args)
    except Exception as exc:
        stop = _stop_behind(exc)
        if stop is None:
            raise  # a bug: keep its traceback
        _say_once(f"netsurgeon: {_stop_word(stop)}{_resume_hint(args)}")
        return _stop_status(stop)


def _dispatch(args: argparse.Namespace) -> int:
    previous_format = warnings.formatwarning
    warnings.formatwarning = _format_warning
    try:
        return int(args.func(args) or 0)
    except WriteError as exc:  # a full disk, say: the atomic writes left nothing half-written
        _say_error(f"netsurgeon: error: {exc}{_resume_hint(args)}")
        return 1
    except NetsurgeonError as exc:
        _say_error(f"netsurgeon: error: {exc}")
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated)
        _say_once(f"netsurgeon: {_stop_word(exc)}{_resume_hint(args)}")
        return _stop_status(exc)
    except BrokenPipeError:
        # The reader went away (`netsurgeon ... | head`): stop quietly, as a killed pipe would.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # so the exit flush cannot fail again
        except (OSError, ValueError):  # stdout is not a real file (tests, notebooks)
            pass
        return 141
    except OSError as exc:  # the file system refused something outside the atomic writes
        _say_error(f"netsurgeon: error: {exc}")
        return 1
    finally:
        warnings.formatwarning = previous_format


def run() -> NoReturn:
    """The ``netsurgeon`` console script: :func:`main`, then exit with its status."""
    status = main()
    if status in (130, 143) and threading.current_thread() is threading.main_thread():
        # Stopped already: a second Ctrl-C while the interpreter shuts down (atexit hooks,
        # loader workers) would only add a traceback to the one-line message.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(status)


if __name__ == "__main__":  # pragma: no cover
    run()
