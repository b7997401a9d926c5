"""Where tasks run: in this process, in local worker processes, or on a Dask cluster.

An `Engine` maps a module-level function `fn(item, shared)` over items and yields
`(item, result)` as results arrive. `shared` (e.g. the price data) reaches each worker once:
as the pool's initializer argument for local processes, scattered to every Dask worker with
`client.scatter(broadcast=True)` for a cluster. A Dask worker that dies loses nothing: the
scheduler runs its tasks again on another worker (docs/scaling.md).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import AbstractContextManager
from multiprocessing.context import BaseContext
from types import TracebackType
from typing import Any

from bt_protection.errors import UserError

CONNECT_TIMEOUT_S = 5  # an unreachable scheduler is reported within this (and well under 10 s)
# Imported once by the forkserver, so its workers start with them.
WORKER_PRELOAD = ("bt_protection.tune.trials", "bt_protection.strategies")

_shared: Any = None  # a local worker's copy of the shared data
_forkserver_path: tuple[str, ...] | None = None  # sys.path when the forkserver was started


def pool_context(preload: Sequence[str] = WORKER_PRELOAD) -> BaseContext:
    """forkserver (workers fork from a server that has imported the `preload` modules once),
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
    context.set_forkserver_preload(list(preload))
    return context


def _install(shared: Any) -> None:
    global _shared
    _shared = shared


def _call_installed(fn: Callable[[Any, Any], Any], item: Any) -> Any:
    return fn(item, _shared)


class Engine(AbstractContextManager["Engine"]):
    """`jobs` local processes (1: this process), or the Dask scheduler at `scheduler`."""

    def __init__(self, shared: Any, jobs: int | None = None, scheduler: str | None = None):
        if jobs is not None and jobs < 1:
            raise UserError(f"`jobs` must be 1 or more, not {jobs}.")
        self.shared = shared
        self.jobs = jobs or os.cpu_count() or 1
        self.scheduler = scheduler
        self._pool: ProcessPoolExecutor | None = None
        self._client: Any = None
        self._scattered: Any = None
        if scheduler is not None:
            self._client = connect(scheduler)
            self._scattered = self._client.scatter([shared], broadcast=True)[0]

    def map(
        self, fn: Callable[[Any, Any], Any], items: Sequence[Any], keys: Sequence[str]
    ) -> Iterator[tuple[Any, Any]]:
        """`(item, fn(item, shared))` in the order results arrive; `keys` name the tasks."""
        if not items:
            return
        if self._client is not None:
            yield from self._map_dask(fn, items, keys)
        elif self.jobs == 1:
            for item in items:
                yield item, fn(item, self.shared)
        else:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    self.jobs,
                    mp_context=pool_context(),
                    initializer=_install,
                    initargs=(self.shared,),
                )
            futures = {self._pool.submit(_call_installed, fn, item): item for item in items}
            for future in as_completed(futures):
                yield futures[future], future.result()

    def _map_dask(
        self, fn: Callable[[Any, Any], Any], items: Sequence[Any], keys: Sequence[str]
    ) -> Iterator[tuple[Any, Any]]:
        from distributed import as_completed as dask_completed

        futures = {
            self._client.submit(fn, item, self._scattered, key=key, pure=False): item
            for item, key in zip(items, keys, strict=True)
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
