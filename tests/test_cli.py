"""The ``netsurgeon`` dispatcher: how interrupts, closed pipes and warnings reach the user."""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from netsurgeon import cli
from netsurgeon.errors import ConfigError
from netsurgeon.pruning import cli as pruning_cli


def _stats_raising(monkeypatch: pytest.MonkeyPatch, action: Any) -> None:
    def run_stats(args: argparse.Namespace) -> int:
        action()
        return 0

    monkeypatch.setattr(pruning_cli, "run_stats", run_stats)


@pytest.mark.parametrize(
    ("namespace", "hint"),
    [
        (argparse.Namespace(command="sweep"), "rerun the same command to continue"),
        (argparse.Namespace(command="demo"), "rerun the same command to continue"),
        (argparse.Namespace(command="finetune", resume=False), "finished epochs are saved"),
        (argparse.Namespace(command="oov", resume=False), "rerun the command with --resume"),
        (argparse.Namespace(command="prune", resume=False, data="d"), "slices and epochs are"),
        (argparse.Namespace(command="prune", resume=False, data=None), ""),  # data-free: no state
        (argparse.Namespace(command="stats"), ""),
    ],
)
def test_an_interrupt_says_how_to_continue(namespace: argparse.Namespace, hint: str) -> None:
    text = cli._resume_hint(namespace)
    assert (hint in text) if hint else text == ""


def test_an_interrupt_is_one_line_and_status_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupt() -> None:
        raise KeyboardInterrupt

    _stats_raising(monkeypatch, interrupt)
    assert cli.main(["stats", "cifar_resnet20"]) == 130
    assert capsys.readouterr().err == "netsurgeon: interrupted\n"


def test_a_closed_pipe_ends_quietly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken() -> None:
        raise BrokenPipeError(32, "Broken pipe")

    _stats_raising(monkeypatch, broken)
    assert cli.main(["stats", "cifar_resnet20"]) == 141  # as a process killed by SIGPIPE
    assert capsys.readouterr().err == ""


def test_warnings_are_one_line_and_the_format_is_restored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    formats = []
    _stats_raising(monkeypatch, lambda: formats.append(warnings.formatwarning))
    before = warnings.formatwarning
    assert cli.main(["stats", "cifar_resnet20", "--repeats", "1", "--warmup", "0"]) == 0
    assert formats == [cli._format_warning]  # while the command ran
    assert warnings.formatwarning is before
    message = UserWarning("skipped 1 unreadable image(s) in d; first: d/a/x.jpg")
    assert cli._format_warning(message, UserWarning, "/src/data.py", 266, "scan = ...") == (
        "netsurgeon: warning: skipped 1 unreadable image(s) in d; first: d/a/x.jpg\n"
    )


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["stats", "resnet18"], "'netsurgeon stats'"),
        (["prune", "resnet18", "--weights", "none", "--out", "{tmp}/x.pt"], "'netsurgeon prune'"),
        (["oov", "evaluate", "RUN", "--data", "FILE"], "'netsurgeon oov evaluate'"),
    ],
)
def test_single_process_commands_refuse_torchrun(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    argv: list[str],
    name: str,
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    called = []
    _stats_raising(monkeypatch, lambda: called.append(True))
    assert cli.main([a.format(tmp=tmp_path) for a in argv]) == 2
    assert not (tmp_path / "x.pt").exists()
    err = capsys.readouterr().err
    assert err.startswith(f"netsurgeon: error: {name} runs in one process, not under torchrun")
    assert "WORLD_SIZE=2" in err and err.count("\n") == 1
    assert not called


def _config_error_from_stats(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> None:
        raise ConfigError("data folder d does not exist")

    _stats_raising(monkeypatch, refuse)


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The seconds the CLI would have slept (it does not): a rank's wait for rank 0."""
    slept: list[float] = []
    monkeypatch.setattr(cli.time, "sleep", slept.append)
    return slept


def test_an_error_on_another_rank_waits_then_names_the_rank(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], waits: list[float]
) -> None:
    # Rank 0 says it at once; rank 1 only if torchrun has not stopped it by then. (Every
    # process of a single-process command under torchrun meets the same refusal.)
    monkeypatch.setenv("WORLD_SIZE", "2")
    refusal = "runs in one process, not under torchrun (WORLD_SIZE=2)"
    monkeypatch.setenv("RANK", "0")
    assert cli.main(["stats", "cifar_resnet20"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("netsurgeon: error: 'netsurgeon stats' ") and refusal in err
    assert waits == []
    monkeypatch.setenv("RANK", "1")
    assert cli.main(["stats", "cifar_resnet20"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("netsurgeon: error (rank 1): 'netsurgeon stats' ") and refusal in err
    assert err.count("\n") == 1 and waits == [cli._PEER_ERROR_DELAY_S]


def test_a_rank_outside_torchrun_prints_at_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], waits: list[float]
) -> None:
    """RANK set for other reasons (a scheduler, a shell) with no WORLD_SIZE > 1 is one process:
    before, it waited 5 s and named a rank."""
    _config_error_from_stats(monkeypatch)
    monkeypatch.setenv("RANK", "3")
    for world_size in (None, "1"):
        if world_size is None:
            monkeypatch.delenv("WORLD_SIZE", raising=False)
        else:
            monkeypatch.setenv("WORLD_SIZE", world_size)
        assert cli.main(["stats", "cifar_resnet20"]) == 2
        assert capsys.readouterr().err == "netsurgeon: error: data folder d does not exist\n"
    assert waits == []


def test_an_argument_error_on_another_rank_waits_then_names_the_rank(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], waits: list[float]
) -> None:
    """Before: every process under torchrun printed the same argparse error."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["prune", "resnet18", "--amount", "abc"])
    assert exit_info.value.code == 2 and waits == [cli._PEER_ERROR_DELAY_S]
    assert capsys.readouterr().err.startswith(
        "netsurgeon: error (rank 1): argument --amount: invalid float value"
    )


def test_an_error_on_another_rank_stopped_while_it_waits_prints_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def stopped(seconds: float) -> None:
        raise cli.Terminated  # torchrun's SIGTERM after rank 0 failed

    monkeypatch.setattr(cli.time, "sleep", stopped)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert cli.main(["stats", "cifar_resnet20"]) == 2
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "namespace",
    [
        argparse.Namespace(command="finetune"),
        argparse.Namespace(command="prune", data="DIR"),
    ],
)
def test_finetune_and_iterative_pruning_run_under_torchrun(
    monkeypatch: pytest.MonkeyPatch, namespace: argparse.Namespace
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli._single_process_only(namespace) == ""
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert cli._single_process_only(argparse.Namespace(command="sweep")) == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bogus"], "argument COMMAND: invalid choice: 'bogus'"),
        (["prune", "resnet18", "--amount", "abc"], "argument --amount: invalid float value"),
        (["export", "m.pt", "--format", "tflite"], "argument --format: invalid choice"),
        (["oov", "train", "--dev", "d", "--out", "o"], "the following arguments are required"),
    ],
)
def test_argument_errors_are_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: argparse printed its whole usage block above the error."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"netsurgeon: error: {message}") and err.count("\n") == 1, err
    assert err.rstrip().endswith("--help`)") and "usage:" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["finetune", "resnet18", "--data", "d", "--out", "o.pt"],
        ["sweep"],
        ["export", "--format", "onnx", "m.pt"],  # an option first
        ["oov", "train", "--train", "t.txt"],
    ],
)
def test_a_missing_extra_leaves_its_commands_with_one_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """Without torchvision (or seqeval), the other commands still work, and the missing ones
    say which extra to install instead of the whole command line failing to start."""
    real = cli.importlib.import_module
    missing = {"netsurgeon.vision.cli": "torchvision", "netsurgeon.vision.experiments_cli": "PIL",
               "netsurgeon.oov.cli": "seqeval"}  # fmt: skip

    def fake(name: str, *args: Any, **kwargs: Any) -> Any:
        if name in missing:
            raise ModuleNotFoundError(f"No module named {missing[name]!r}", name=missing[name])
        return real(name, *args, **kwargs)  # torch's own imports pass package=

    monkeypatch.setattr(cli.importlib, "import_module", fake)
    assert cli.main(["models"]) == 0  # a core command is unaffected
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    extra = "nlp" if argv[0] == "oov" else "vision"
    assert err.count("\n") == 1 and f"pip install 'netsurgeon[{extra}]'" in err
    assert f"`netsurgeon {argv[0]}` needs the {extra} extra" in err


def test_sigterm_is_one_line_status_143_and_the_handler_is_restored(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        pytest.skip("the test runner handles SIGTERM itself")

    def terminate() -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # a real signal, as `kill PID` sends
        time.sleep(30)  # the handler raises before this ends

    _stats_raising(monkeypatch, terminate)
    start = time.perf_counter()
    assert cli.main(["stats", "cifar_resnet20"]) == 143
    assert time.perf_counter() - start < 20
    assert capsys.readouterr().err == "netsurgeon: terminated\n"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_loader_workers_that_die_with_a_stop_do_not_break_its_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: PyTorch's SIGCHLD handler raised "worker killed" inside the final message (a
    traceback, exit status 1) when a scheduler's SIGTERM also stopped the loader workers."""
    if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        pytest.skip("the test runner handles SIGTERM itself")

    def loaders_handler(signum: int, frame: object) -> None:
        raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Terminated.")

    say = cli._say_once

    def say_after_a_worker_died(text: str) -> None:
        os.kill(os.getpid(), signal.SIGCHLD)  # a worker stopped with the process group
        say(text)

    def terminate() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the handler raises before this ends

    monkeypatch.setattr(cli, "_say_once", say_after_a_worker_died)
    _stats_raising(monkeypatch, terminate)
    previous = signal.signal(signal.SIGCHLD, loaders_handler)
    try:
        assert cli.main(["stats", "cifar_resnet20"]) == 143
        assert signal.getsignal(signal.SIGCHLD) is loaders_handler  # put back afterwards
    finally:
        signal.signal(signal.SIGCHLD, previous)
    assert capsys.readouterr().err == "netsurgeon: terminated\n"


def _wait_to_be_stopped(ready: Any) -> None:
    ready.set()
    time.sleep(30)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forked children only where there is fork")
def test_forked_children_die_of_a_stop_as_without_netsurgeon() -> None:
    """Loader workers are forked. Before: they inherited the stop handlers, so a SIGTERM sent
    to the process group made a worker unwind instead of dying, and a worker still alive when
    the main process died could print a traceback after the one-line message."""
    if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        pytest.skip("the test runner handles SIGTERM itself")
    context = multiprocessing.get_context("fork")
    with cli._stops_unwind():
        assert signal.getsignal(signal.SIGTERM) != signal.SIG_DFL  # the command's own
        ready = context.Event()
        child = context.Process(target=_wait_to_be_stopped, args=(ready,))
        child.start()
        assert ready.wait(20)
        os.kill(child.pid, signal.SIGTERM)
        child.join(20)
    assert child.exitcode == -signal.SIGTERM  # killed by it, not exit status 1 after unwinding
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert cli._INSTALLED == []


def _report_from_resource_sharer(kind: str) -> None:
    """Raise ``kind`` in a frame of multiprocessing's fd-sharing module and report it as its
    thread does (``sys.excepthook``)."""
    from multiprocessing import resource_sharer

    try:
        exec(compile(f"raise {kind}('peer gone')", resource_sharer.__file__, "exec"))
    except BaseException:
        sys.excepthook(*sys.exc_info())


def _report_both() -> None:
    _report_from_resource_sharer("EOFError")
    _report_from_resource_sharer("ConnectionResetError")
    _report_from_resource_sharer("ValueError")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forked children only where there is fork")
def test_a_forked_worker_does_not_report_a_batch_transfer_its_main_process_abandoned(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """CI saw a loader worker's fd-sharing thread print "Traceback ... resource_sharer.py" after
    the one-line stop message: the stopped main process had gone mid-transfer. Such lost-peer
    errors are not reported from a forked child; other errors are."""
    context = multiprocessing.get_context("fork")
    with cli._stops_unwind():
        child = context.Process(target=_report_both)
        child.start()
        child.join(20)
    err = capfd.readouterr().err
    assert child.exitcode == 0
    assert "ValueError: peer gone" in err
    assert "EOFError" not in err and "ConnectionResetError" not in err


def test_an_interrupt_while_the_commands_load_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted_import(name: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.importlib, "import_module", interrupted_import)
    assert cli.main(["stats", "cifar_resnet20"]) == 130
    assert capsys.readouterr().err == "netsurgeon: interrupted\n"


def _python(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (nothing imported yet); it must succeed."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done


def test_import_netsurgeon_does_not_load_torch_until_asked() -> None:
    code = (
        "import sys, netsurgeon\n"
        "assert 'torch' not in sys.modules, 'torch loaded by import netsurgeon'\n"
        "from netsurgeon import prune\n"
        "assert 'torch' in sys.modules and prune is netsurgeon.pruning.prune\n"
        "assert 'torchvision' not in sys.modules, 'a second more for any model'\n"
        "assert netsurgeon.training.fit and set(netsurgeon.__all__) <= set(dir(netsurgeon))\n"
        "try:\n"
        "    netsurgeon.no_such_name\n"
        "except AttributeError as exc:\n"
        "    assert str(exc) == \"module 'netsurgeon' has no attribute 'no_such_name'\"\n"
        "else:\n"
        "    raise SystemExit('no AttributeError')\n"
    )
    _python(code)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_torch_to_load(process: subprocess.Popen[str]) -> None:
    """Until the process has started loading PyTorch's library (the command line's imports)."""
    deadline = time.monotonic() + 60
    maps = Path(f"/proc/{process.pid}/maps")
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(OSError):
            if "libtorch" in maps.read_text():
                return
        time.sleep(0.01)
    pytest.fail("the command never loaded libtorch")


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize(("signum", "message", "status"), [
    (signal.SIGINT, "netsurgeon: interrupted\n", 130),
    (signal.SIGTERM, "netsurgeon: terminated\n", 143),
])  # fmt: skip
def test_the_console_script_stopped_during_its_imports_says_one_line(
    signum: int, message: str, status: int
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", "from netsurgeon.cli import run; run()", "stats", "resnet18"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell starts background jobs (as CI may run us) with SIGINT ignored, and Python
        # then installs no Ctrl-C handler: give the command line the terminal's default.
        preexec_fn=_default_sigint,
    )
    _wait_for_torch_to_load(process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert (process.returncode, stderr) == (status, message)


def test_version_is_answered_without_loading_torch() -> None:
    code = (
        "import sys\n"
        "from netsurgeon.cli import main\n"
        "assert main(['--version']) == 0\n"
        "assert 'torch' not in sys.modules\n"
    )
    done = _python(code)
    assert done.stdout == f"netsurgeon {cli.__version__}\n"
    # The same words through the full parser (argparse's version action) say the same.
    with pytest.raises(SystemExit) as info:
        cli.build_parser().parse_args(["--version"])
    assert info.value.code == 0


def test_help_and_oov_mistakes_are_answered_without_loading_torch() -> None:
    """Only the chosen command's module loads: the top-level help lists every command at
    once, and the oov commands (whose module is light) refuse bad options at once."""
    code = (
        "import contextlib, io, sys\n"
        "from netsurgeon.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "for words in (['oov', 'train', '--task', 'chunking'], ['nosuch']):\n"
        "    with contextlib.redirect_stderr(io.StringIO()) as err:\n"
        "        try:\n"
        "            main(words)\n"
        "        except SystemExit as stop:\n"
        "            assert stop.code == 2\n"
        "    assert 'invalid choice' in err.getvalue(), err.getvalue()\n"
        "assert 'torch' not in sys.modules, 'torch loaded'\n"
        "print(out.getvalue(), end='')\n"
    )
    full = io.StringIO()
    with contextlib.redirect_stdout(full), pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--help"])
    # The same help as with every command loaded.
    assert _python(code).stdout == full.getvalue()


@pytest.mark.parametrize("command", ["prune", "stats", "models", "finetune", "export", "sweep",
                                     "compare-models", "demo", "oov"])  # fmt: skip
def test_every_command_help_and_option_error_is_answered_without_loading_torch(
    command: str,
) -> None:
    """The parsers are built without PyTorch or torchvision (3.6 s here before): a user asking
    for help or mistyping an option waits no longer than the command line's start."""
    code = textwrap.dedent(f"""
        import contextlib, io, sys
        from netsurgeon.cli import main
        for words in ([{command!r}, "--help"], [{command!r}, "--no-such-option"]):
            with contextlib.redirect_stdout(io.StringIO()) as out:
                with contextlib.redirect_stderr(io.StringIO()) as err:
                    try:
                        main(words)
                    except SystemExit as stop:
                        assert stop.code == (0 if words[1] == "--help" else 2), stop.code
            said = out.getvalue() + err.getvalue()
            expected = "usage: netsurgeon" if words[1] == "--help" else "netsurgeon: error:"
            assert said.startswith(expected), said
        loaded = sorted(m for m in ("torch", "torchvision", "matplotlib") if m in sys.modules)
        assert not loaded, loaded
    """)
    _python(code)


def test_vision_commands_without_torchvision_name_the_extra_before_starting() -> None:
    """Their modules import torchvision only when used, so the command line checks the
    extra's packages first. Before (found by a review): a ModuleNotFoundError traceback."""
    code = textwrap.dedent("""
        import contextlib, io, sys
        sys.modules["torchvision"] = None  # as if it were not installed
        from netsurgeon.cli import main
        for words in (["finetune", "resnet18", "--data", "d", "--out", "o.pt"],
                      ["export", "m.pt", "--format", "onnx"], ["sweep", "--out", "o"],
                      ["compare-models"], ["demo"]):
            with contextlib.redirect_stderr(io.StringIO()) as err:
                status = main(words)
            print(status, err.getvalue(), end="")
        assert "torch" not in sys.modules
    """)
    lines = _python(code).stdout.splitlines()
    commands = ["finetune", "export", "sweep", "compare-models", "demo"]
    assert lines == [
        f"2 netsurgeon: error: `netsurgeon {c}` needs the vision extra (torchvision is not "
        "installed): pip install 'netsurgeon[vision]'"
        for c in commands
    ]


def test_the_light_option_names_are_the_implementations_names() -> None:
    from netsurgeon import choices, distill, training
    from netsurgeon.pruning import criteria, pruner
    from netsurgeon.vision import export

    assert tuple(criteria.CRITERIA) == choices.CRITERION_NAMES
    assert pruner.SCOPES is choices.SCOPES and training.SLICE_LRS is choices.SLICE_LRS
    assert distill.DEFAULT_FEATURE_WEIGHT == choices.DEFAULT_FEATURE_WEIGHT
    assert (export.FORMATS, export.EXPORTERS) == (choices.EXPORT_FORMATS, choices.EXPORTERS)


def test_every_registered_command_is_listed_in_order() -> None:
    """The light listing (netsurgeon.commands) matches what the modules register."""
    from netsurgeon.commands import COMMANDS

    parser = cli.build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert list(actions[0].choices) == list(COMMANDS)


def test_a_command_loads_only_its_own_module(monkeypatch: pytest.MonkeyPatch) -> None:
    real = cli.importlib.import_module
    loaded: list[str] = []

    def spy(name: str, *args: Any) -> Any:
        loaded.append(name)
        return real(name, *args)

    monkeypatch.setattr(cli.importlib, "import_module", spy)
    args = cli.build_parser(["oov", "evaluate", "run", "--data", "d.txt"]).parse_args(
        ["oov", "evaluate", "run", "--data", "d.txt"]
    )
    assert (args.command, args.oov_command, loaded) == ("oov", "evaluate", ["netsurgeon.oov.cli"])


class _NoisyOnCleanup:
    """Raises when collected, as a data loader whose workers were killed does."""

    def __del__(self) -> None:
        raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Terminated.")


def test_what_a_stop_causes_is_the_stop_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A SIGTERM to the process group also kills the loader workers: the loader may raise
    about them while the stop unwinds, and complain again when it is collected."""
    if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        pytest.skip("the test runner handles SIGTERM itself")

    def terminate_with_a_dead_worker() -> None:
        noisy = _NoisyOnCleanup()
        noisy.cycle = noisy  # type: ignore[attr-defined]  # freed only by the collector
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
        except KeyboardInterrupt:  # as the loader does: its error replaces the stop
            raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Terminated.")  # noqa: B904

    _stats_raising(monkeypatch, terminate_with_a_dead_worker)
    hook = sys.unraisablehook
    assert cli.main(["stats", "cifar_resnet20"]) == 143
    assert capsys.readouterr().err == "netsurgeon: terminated\n"
    assert sys.unraisablehook is hook and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    # Without a stop, the same error is a bug and keeps its traceback.
    _stats_raising(monkeypatch, lambda: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["stats", "cifar_resnet20"])


def test_the_stop_hint_promises_only_what_was_saved(tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    finetune = argparse.Namespace(command="finetune", resume=False, out=out, checkpoint=None)
    assert cli._resume_hint(finetune) == ""  # stopped before its first epoch ended
    (tmp_path / "m.pt.train.ckpt").write_bytes(b"")
    assert "finished epochs are saved" in cli._resume_hint(finetune)
    prune = argparse.Namespace(command="prune", resume=False, out=out, data="d",
                               checkpoint_dir=None)  # fmt: skip
    assert cli._resume_hint(prune) == ""
    (tmp_path / "m.pt.iterative").mkdir()
    assert cli._resume_hint(prune) == ""  # the folder, but no slice finished
    (tmp_path / "m.pt.iterative" / "iterative_state.pt").write_bytes(b"")
    assert "slices and epochs are saved" in cli._resume_hint(prune)
    sweep = argparse.Namespace(command="sweep", out=tmp_path / "sweep")
    assert cli._resume_hint(sweep) == ""
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "config.json").write_text("{}")
    assert cli._resume_hint(sweep) == ""
    (tmp_path / "sweep" / "results.json").write_text("{}")
    assert "rerun the same command to continue" in cli._resume_hint(sweep)
    train = argparse.Namespace(command="oov", oov_command="train", resume=False, out=tmp_path)
    assert cli._resume_hint(train) == ""
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    assert "--resume" in cli._resume_hint(train)


def test_python_m_netsurgeon_is_the_command_line() -> None:
    """Before: "No module named netsurgeon.__main__" (for environments without the script on
    PATH, such as a venv that is not activated)."""
    version = subprocess.run(
        [sys.executable, "-m", "netsurgeon", "--version"], capture_output=True, text=True
    )
    assert version.returncode == 0 and version.stdout == f"netsurgeon {cli.__version__}\n"
    bad = subprocess.run(
        [sys.executable, "-m", "netsurgeon", "prune", "resnet18", "--amount", "1.5", "--out", "x"],
        capture_output=True,
        text=True,
    )
    assert (bad.returncode, bad.stderr) == (
        2,
        "netsurgeon: error: --amount 1.5 is not allowed; it must be in (0, 1)\n",
    )
