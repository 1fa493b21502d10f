"""The command line's frame: the app, its shared options, the error boundary, progress bars."""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from trilho.errors import StorageError, TrilhoError
from trilho.execution import collector

if TYPE_CHECKING:  # the rest is imported where it is used: `trilho --help` imports no more than it needs
    from rich.progress import Progress

    from trilho.execution.background import Stopped

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="trilho: a tabular experiment (classification or regression) on rails, from raw data to a "
                       "registered model.")
console = Console(stderr=True)

# the experiment and its source may come from the environment too (Compose sets them from .env); empty is unset
ExperimentOpt = Annotated[str, typer.Option("--experiment", "-e", envvar="TRILHO_EXPERIMENT",
                                            help="Experiment file (.toml/.yaml) or built-in name.")]
SourceOpt = Annotated[str | None, typer.Option(
    "--source", "-s", envvar="TRILHO_SOURCE",
    help="Override the data source: kaggle:..., https://..., file:PATH, synthetic:diabetes?rows=N&seed=S.")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Override any experiment key, e.g. --set cv.n_repeats=3 (repeatable).")]
ModelNameOpt = Annotated[str, typer.Option("--name", "-n", help="Registered model name.")]
Command = TypeVar("Command", bound=Callable[..., Any])


def fail(exc: TrilhoError) -> typer.Exit:
    """Say what went wrong in one line; the caller raises what this returns."""
    console.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # a full disk, a quota, a file-size limit


def disk_full(exc: OSError) -> str:
    """One line for a write that found no room, wherever in a command it happened: the run it was
    part of has ended FAILED and its temporary folder is gone (the with-blocks that hold them)."""
    import tempfile

    where = f" writing {exc.filename!r}" if exc.filename else ""
    return (f"{os.strerror(exc.errno or errno.ENOSPC)}{where}: free some space there, or point TMPDIR (temporary "
            f"files, now {tempfile.gettempdir()!r}) or the lake at a disk with room; a run this stopped ended FAILED")


def stopped(stop: Stopped) -> typer.Exit:
    """Say that a signal stopped the command, and which run it ended; the caller raises what this returns."""
    ended = f": run {stop.runs[-1]} marked KILLED" if stop.runs else ""
    console.print(f"stopped by {stop.signal_name}{ended}", highlight=False, soft_wrap=True)
    return typer.Exit(stop.exit_code)


def command(name: str | None = None, *, serves: bool = False) -> Callable[[Command], Command]:
    """Register a command whose ``TrilhoError`` becomes one readable line and exit status 1, and that
    SIGTERM or SIGINT stops cleanly (trilho.execution.background.Stopped): one line, exit status 143 or 130.
    A command that ``serves`` until stopped keeps Python's garbage collector as it is; the others
    start and end as trilho.execution.collector says."""

    def register(fn: Command) -> Command:
        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            from trilho.execution.background import Stopped, stop_on_signals

            if not serves:
                collector.starting()
            try:
                with stop_on_signals():
                    return fn(*args, **kwargs)
            except TrilhoError as exc:
                raise fail(exc) from None
            except Stopped as stop:
                raise stopped(stop) from None
            except OSError as exc:
                if exc.errno not in _FULL:  # other system errors are trilho's to word where they arise
                    raise
                raise fail(StorageError(disk_full(exc))) from None

        app.command(name)(guarded)
        return fn

    return register


@app.callback()
def main(verbose: Annotated[int, typer.Option(
        "--verbose", "-v", count=True,
        help="Log what each stage does; -vv also the libraries' own notes (MLflow, alembic, urllib3, ...).")] = 0) -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # a tracking server that dies mid-run should cost seconds, not MLflow's default minutes of retries
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if verbose >= 2:
        return
    # The libraries' INFO notes (MLflow creating a fresh store's tables, alembic's migrations, a
    # model's input check, urllib3's connections) are theirs, not the run's: at the default level,
    # and with -v, they say only WARNING and above. MLflow and Dask set up their loggers when first
    # imported, from their own variables: those are set here unless the user set them (asking for more).
    quiet = ["alembic", "sqlalchemy", "urllib3", "botocore", "boto3", "s3transfer", "distributed", "dask", "matplotlib",
             "PIL", "kagglehub", "httpx", "huey", "git"]
    if "MLFLOW_LOGGING_LEVEL" not in os.environ:
        os.environ["MLFLOW_LOGGING_LEVEL"] = "WARNING"
        quiet.append("mlflow")  # already imported (a caller's process): its loggers are set here too
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)


def load(ref: str, source: str | None, overrides: list[str] | None, *, fetches: bool = True) -> Any:
    """The experiment named on the command line, with ``--source`` and ``--set`` applied. For a
    command that ``fetches`` the source, a ``--source`` over TRILHO_MAX_SOURCE_BYTES is refused
    first, before the experiment's imports (pandas, scikit-learn: seconds) are paid for."""
    if fetches and source:
        refuse_too_large(source)
    from trilho.experiment import load_experiment

    extra = list(overrides or [])
    if source:  # a pin belongs to the experiment's own source, not to a substitute
        extra = [f"source.uri={json.dumps(source)}", 'source.sha256=""', *extra]
    return load_experiment(ref, extra)


def refuse_too_large(source: str) -> None:
    """The refusal a ``file:`` or ``synthetic:`` source over TRILHO_MAX_SOURCE_BYTES meets when it is
    fetched, said now (trilho.data.ingest.refuse_too_large); other sources are left to the fetch."""
    from trilho.data.ingest import refuse_too_large as refuse
    from trilho.settings import load_settings

    refuse(source, load_settings().max_source_bytes)


def bar() -> Progress:
    """The progress bar of long commands, on stderr; it disappears when done.

    It redraws when told (``refresh=True``), not from a thread of its own: with no other thread
    alive the figures may be drawn in forked children (see trilho.execution.background)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, console=console, transient=True, auto_refresh=False)


def with_bar(title: str, total: int, work: Callable[[Callable[[str, int, int], None]], Any]) -> Any:
    """``work(progress)`` under a progress bar that ``progress(stage, done, total)`` moves."""
    with bar() as shown:
        task = shown.add_task(title, total=total)
        return work(lambda _stage, done, total: shown.update(task, completed=done, total=total, refresh=True))


def supervise(cmd: list[str], env: dict[str, str], grace_s: float = 10.0) -> int:
    """Run a long-lived service (MLflow and the workers it starts) in a process group of its own and
    take it down whole when this process is told to stop (SIGTERM, SIGINT, SIGHUP): nothing is left
    listening after ``trilho server`` or ``trilho ui`` ends."""
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)

    def stop(signum: int, _frame: Any) -> None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        try:  # the group's stragglers (uvicorn workers) get the grace period, then SIGKILL
            os.killpg(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline:
                os.killpg(proc.pid, 0)
                time.sleep(0.2)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return code
