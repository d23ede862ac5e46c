"""One queue of blocking disk jobs for every partition of a node: cross-partition batching.

A partition's persist (write its records, fsync its log) runs in a thread so the event loop
never blocks on the disk. Handing every persist to the thread pool separately costs a
thread wake-up per partition per batch; under load this queue instead gives the disk
thread every job that arrived meanwhile in one hand-off, and runs them one after another
(one disk: running them in parallel buys little). A job that raises fails only its caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from planaria._node.tasks import cancel_all

__all__ = ["DiskQueue"]

_T = TypeVar("_T")
_Job = tuple[Callable[[], Any], "asyncio.Future[Any]"]


def _run_jobs(jobs: list[_Job]) -> list[tuple[bool, Any]]:
    outcomes: list[tuple[bool, Any]] = []
    for fn, _future in jobs:
        try:
            outcomes.append((True, fn()))
        except Exception as exc:  # handed to the caller's future, which raises it
            outcomes.append((False, exc))
    return outcomes


class DiskQueue:
    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-disk")
        self._jobs: list[_Job] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.handoffs = 0
        self.jobs_run = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_forever(), name="planaria-disk")

    async def run(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` in the disk thread (after the jobs queued before it)."""
        if self._task is None:
            raise RuntimeError("the disk queue is not running")
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._jobs.append((fn, future))
        self._wakeup.set()
        return await future

    async def close(self) -> None:
        """Finish the queued jobs, then stop the thread."""
        if self._task is not None:
            while self._jobs:
                await asyncio.sleep(0.001)
            await cancel_all([self._task])
            self._task = None
        self._executor.shutdown(wait=True)

    async def _flush_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._jobs:
                continue
            jobs, self._jobs = self._jobs, []
            self.handoffs += 1
            self.jobs_run += len(jobs)
            outcomes = await loop.run_in_executor(self._executor, _run_jobs, jobs)
            for (_fn, future), (ok, value) in zip(jobs, outcomes, strict=True):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
