"""Where jobs run: in this process, in local worker processes, or on a Dask cluster.

`Engine.run` executes `Task`s (a `RunSpec`, its name, where its audit goes) with `run_job` and
yields `(task, RunResult)` as results arrive; `run`, `compare` and `tune` all execute through
it. The price frames, loaded once by the caller, reach each worker once: as the pool's
initializer argument for local processes, scattered to every Dask worker with
`client.scatter(broadcast=True)` for a cluster, so workers read no data files. A local worker
writes a job's audit where the task says; a Dask worker writes it in a folder of its own and
sends its bytes back with the result. A local worker that dies (a signal, the out-of-memory
killer) breaks the pool: its jobs run again, each alone in a fresh worker, so only the job that
dies again fails. A Dask worker that dies loses nothing: the scheduler runs its tasks again on
another worker (docs/scaling.md).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from multiprocessing.context import BaseContext
from pathlib import Path
from types import TracebackType
from typing import Any

from tqdm import tqdm

from bt_protection.errors import UserError
from bt_protection.job import Frames, RunResult, RunSpec, run_job
from bt_protection.strategies_registry import StrategySource, worker_reference

CONNECT_TIMEOUT_S = 5  # an unreachable scheduler is reported within this (and well under 10 s)
# Imported once by the forkserver, so its workers start with them.
WORKER_PRELOAD = (
    "bt_protection.job",
    "bt_protection.strategies",
    "bt_protection.integration.rebalancer",
)
DIED = "ChildProcessError: its worker process died (killed by a signal or out of memory)"

_frames: Frames = {}  # a local worker's copy of the price frames
_forkserver_path: tuple[str, ...] | None = None  # sys.path when the forkserver was started


@dataclass(frozen=True)
class Execution:
    """Where jobs run: `jobs` local processes (None: one per CPU; 1: this process), or the
    Dask scheduler at `scheduler`; `progress`: a progress bar on stderr (shown on a terminal)."""

    jobs: int | None = None
    scheduler: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.jobs is not None and self.jobs < 1:
            raise UserError(f"`jobs` must be 1 or more, not {self.jobs}.")


@dataclass(frozen=True)
class Task:
    """A job as an engine runs it: `key` names it (unique in one `run`), `audit` is where its
    audit file goes on this machine (None: no audit)."""

    key: str
    spec: RunSpec
    audit: Path | None = None


def pool_context() -> BaseContext:
    """forkserver (workers fork from a server that has imported `WORKER_PRELOAD` once),
    or spawn where forkserver does not exist or when `sys.path` changed since the forkserver
    started (a notebook that added a folder): multiprocessing starts a spawned worker with the
    current `sys.path`, so it imports what this process imports."""
    global _forkserver_path
    path = tuple(sys.path)
    if _forkserver_path is None:
        _forkserver_path = path
    if "forkserver" not in multiprocessing.get_all_start_methods() or path != _forkserver_path:
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(WORKER_PRELOAD))
    return context


def _install(frames: Frames) -> None:
    global _frames
    _frames = frames


def _run_installed(task: Task) -> RunResult:
    return run_job(task.spec, _frames, task.audit)


def _run_remote(task: Task, frames: Frames) -> RunResult:
    """`task` on a Dask worker: its audit written in a temporary folder and sent back."""
    if task.audit is None:
        return run_job(task.spec, frames)
    with tempfile.TemporaryDirectory() as tmp:
        audit = Path(tmp) / "audit.jsonl"
        result = run_job(task.spec, frames, audit)
        return replace(result, audit=audit.read_bytes() if audit.is_file() else b"")


class Engine(AbstractContextManager["Engine"]):
    """Runs tasks on `frames` as `execution` says. `strategy`: what the tasks will run;
    `self.strategy` is how tasks name it (a reference any process resolves), and a class only
    this process has (a notebook cell's) makes the engine run tasks here."""

    def __init__(self, frames: Frames, execution: Execution, strategy: StrategySource):
        reference = worker_reference(strategy, execution.scheduler)
        self.strategy: StrategySource = strategy if reference is None else reference
        self.frames = frames
        self.jobs = 1 if reference is None else execution.jobs or os.cpu_count() or 1
        self._pool: ProcessPoolExecutor | None = None
        self._client: Any = None
        self._scattered: Any = None
        if execution.scheduler is not None:
            self._client = connect(execution.scheduler)
            self._scattered = self._client.scatter([frames], broadcast=True)[0]

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, RunResult]]:
        """`(task, result)` for every task, in the order results arrive."""
        if not tasks:
            return
        if self._client is not None:
            yield from self._run_dask(tasks)
        elif self.jobs == 1:
            for task in tasks:
                yield task, run_job(task.spec, self.frames, task.audit)
        else:
            yield from self._run_pool(tasks)

    def _new_pool(self, workers: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            workers, mp_context=pool_context(), initializer=_install, initargs=(self.frames,)
        )

    def _run_pool(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, RunResult]]:
        if self._pool is None:
            self._pool = self._new_pool(self.jobs)
        futures = {self._pool.submit(_run_installed, task): task for task in tasks}
        lost: list[Task] = []
        for future in as_completed(futures):
            if isinstance(future.exception(), BrokenProcessPool):
                lost.append(futures[future])  # a worker died and the pool with it
            else:
                yield futures[future], future.result()
        if lost:
            self._pool.shutdown()
            self._pool = None
        for task in lost:  # each alone in a fresh worker: only the job that dies fails
            with self._new_pool(1) as pool:
                retry: Future[RunResult] = pool.submit(_run_installed, task)
                error = retry.exception()
            yield task, RunResult(DIED) if isinstance(error, BrokenProcessPool) else retry.result()

    def _run_dask(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, RunResult]]:
        from distributed import as_completed as dask_completed

        futures = {
            self._client.submit(_run_remote, task, self._scattered, key=task.key, pure=False): task
            for task in tasks
        }
        for future in dask_completed(list(futures), loop=self._client.loop):
            yield futures[future], future.result()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        if self._client is not None:
            self._client.close()


def progress_bar(desc: str, unit: str, total: int, progress: bool) -> tqdm:
    """A progress bar on stderr, shown when stderr is a terminal (never when not `progress`)."""
    return tqdm(
        total=total, desc=desc, unit=unit, file=sys.stderr, disable=None if progress else True
    )


def connect(address: str) -> Any:
    """A Dask client of the scheduler at `address`; `UserError` within `CONNECT_TIMEOUT_S`
    seconds when there is none there, or when `distributed` is not installed."""
    try:
        from distributed import Client
    except ImportError:
        raise UserError(
            "`scheduler` needs the Dask distributed package; install it with "
            "pip install 'bt-protection[cluster]'."
        ) from None
    try:
        return Client(address, timeout=f"{CONNECT_TIMEOUT_S}s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(
            f"no Dask scheduler answered at {address} within {CONNECT_TIMEOUT_S} s ({reason}); "
            "start one with `dask scheduler` and pass its tcp://HOST:PORT address."
        ) from None
