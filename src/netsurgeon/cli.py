"""The ``netsurgeon`` command: thin subcommands over library calls.

Each capability registers its own subcommands (``netsurgeon.pruning.cli``,
``netsurgeon.oov.cli``, ...). User errors (:class:`~netsurgeon.errors.NetsurgeonError`)
become one line on stderr and exit status 2; anything else is a bug and keeps its traceback.
Ctrl-C (SIGINT) and SIGTERM stop a command with one line saying how to continue it, exit
status 130 and 143 as a shell reports them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import NoReturn

from netsurgeon import __version__
from netsurgeon.errors import ConfigError, NetsurgeonError, WriteError

# Modules that define ``add_commands(subparsers)``; each subcommand sets ``func(args) -> int``.
# With each: the extra its third-party imports come from, and the commands it adds, so that a
# missing extra leaves those commands in place with one message saying what to install.
_COMMAND_MODULES: tuple[tuple[str, str | None, tuple[str, ...]], ...] = (
    ("netsurgeon.pruning.cli", None, ("prune", "stats", "models")),
    ("netsurgeon.vision.cli", "vision", ("finetune", "export")),
    ("netsurgeon.vision.experiments_cli", "vision", ("sweep", "compare-models", "demo")),
    ("netsurgeon.oov.cli", "nlp", ("oov",)),
)


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line, like netsurgeon's own user errors.

    Subcommand parsers inherit the class (``add_subparsers`` uses the parent's type).
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"netsurgeon: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every registered subcommand."""
    parser = _Parser(
        prog="netsurgeon",
        description="Prune CNNs and predict embeddings for out-of-vocabulary words.",
    )
    parser.add_argument("--version", action="version", version=f"netsurgeon {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name, extra, commands in _COMMAND_MODULES:
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
    if args.command in _RERUN_RESUMES:
        return "; finished runs are saved: rerun the same command to continue after them"
    resumable = hasattr(args, "resume") and (args.command != "prune" or args.data is not None)
    if resumable:
        done = "slices and epochs" if args.command == "prune" else "epochs"
        return f"; finished {done} are saved: rerun the command with --resume to continue"
    return ""


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


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Terminated` instead of killing at once.

    Only where SIGTERM still has its default action and in the main thread (where Python
    runs signal handlers); the previous handler comes back afterwards.
    """
    installed = False
    if threading.current_thread() is threading.main_thread():
        try:
            installed = signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
            if installed:
                signal.signal(signal.SIGTERM, _raise_terminated)
        except (ValueError, OSError):  # pragma: no cover - no signals here
            installed = False
    try:
        yield
    finally:
        if installed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _say_once(text: str) -> None:
    """Print to stderr, once: under torchrun only on rank 0."""
    if os.environ.get("RANK", "0") == "0":
        print(text, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    words = list(sys.argv[1:] if argv is None else argv)
    if words == ["--version"]:  # answered without loading the commands (and PyTorch)
        print(f"netsurgeon {__version__}")
        return 0
    with _sigterm_unwinds():
        try:
            # Loading the commands imports PyTorch, which takes seconds: a Ctrl-C then is
            # as welcome as later, and nothing has started yet.
            parser = build_parser()
        except KeyboardInterrupt as exc:
            _say_once(f"netsurgeon: {_stop_word(exc)}")
            return _stop_status(exc)
        args = parser.parse_args(words)
        if not hasattr(args, "func"):
            parser.print_help()
            return 2
        refusal = _single_process_only(args)
        if refusal:
            _say_once(f"netsurgeon: error: {refusal}")  # once, not once per process
            return 2
        return _run(args)


def _stop_word(exc: KeyboardInterrupt) -> str:
    return "terminated" if isinstance(exc, Terminated) else "interrupted"


def _stop_status(exc: KeyboardInterrupt) -> int:
    # 128 + the signal's number, as a shell reports a process that signal ended.
    return 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)


def _run(args: argparse.Namespace) -> int:
    previous_format = warnings.formatwarning
    warnings.formatwarning = _format_warning
    try:
        return int(args.func(args) or 0)
    except WriteError as exc:  # a full disk, say: the atomic writes left nothing half-written
        print(f"netsurgeon: error: {exc}{_resume_hint(args)}", file=sys.stderr)
        return 1
    except NetsurgeonError as exc:
        print(f"netsurgeon: error: {exc}", file=sys.stderr)
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
        print(f"netsurgeon: error: {exc}", file=sys.stderr)
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
