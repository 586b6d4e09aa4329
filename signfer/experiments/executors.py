"""Where independent jobs run: in this process, or as tasks on a Ray cluster.

Both executors have one method, :meth:`~LocalExecutor.run`: call
``fn(*job, **shared)`` for every job and yield ``(index, result, error)`` as
each one finishes. The caller (the grid runner, video annotation) writes each
result as it comes, so a run folder looks the same whichever executor ran it,
and a killed driver loses only the jobs in flight.

``shared`` holds the large inputs every job reads (decoded images, frozen
backbone features): the Ray executor puts each into the object store once
(``ray.put``) and every task reads that one copy; the local one passes them on
as they are.

Example:
    >>> with make_executor(None) as ex:  # doctest: +SKIP
    ...     for i, result, error in ex.run(pow, [(2, 3), (3, 2)]):
    ...         print(i, result)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from signfer.errors import SignferError

#: How to get Ray, quoted whenever ``--ray`` is asked for without it.
RAY_INSTALL = "pip install 'signfer[ray]'"

#: A job's outcome: (its index in the job list, its result or None, the
#: exception that ended it or None).
Outcome = tuple[int, Any, BaseException | None]


@dataclass(frozen=True)
class Resources:
    """What one task declares to Ray's scheduler.

    Attributes:
        cpus: CPU cores for the task; PyTorch in it uses that many threads.
        gpus: GPUs for the task (fractions share one).
        max_retries: how often a task is run again when its worker process
            dies (an exception raised by the task itself is never retried:
            it would only fail again).
    """

    cpus: float = 1.0
    gpus: float = 0.0
    max_retries: int = 3


class LocalExecutor:
    """Runs the jobs one after another in this process, in order."""

    name = "local"

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def run(self, fn: Callable, jobs: Sequence[tuple], *, shared: dict | None = None,
            resources: Resources | None = None, on_start: Callable[[int], None] | None = None,
            catch: tuple[type[BaseException], ...] = ()) -> Iterator[Outcome]:
        """``fn(*jobs[i], **shared)`` for each i, in order; yields ``(i, result, None)``.

        An exception of a type in ``catch`` is yielded as ``(i, None, exc)``;
        any other stops the run. ``on_start(i)`` is called before job i.
        """
        for i, job in enumerate(jobs):
            if on_start is not None:
                on_start(i)
            try:
                result = fn(*job, **(shared or {}))
            except catch as e:
                yield i, None, e
                continue
            yield i, result, None


class RayExecutor:
    """Runs each job as one Ray task, on a local Ray or a cluster.

    Args:
        address: ``None`` starts a local Ray with this machine's cores (or
            ``num_cpus``); ``"auto"`` joins the cluster started on this
            machine (``ray start --head``); ``"ray://host:port"`` joins a
            remote one through Ray Client.
        num_cpus: cores of a local Ray (default: all of them).
        resources: what each task declares, unless :meth:`run` is told otherwise.

    Ray is optional (``pip install 'signfer[ray]'``); without it, creating
    this executor is a one-line :class:`SignferError` saying so. A Ray that is
    already running in this process (``ray.init`` called before) is used as it
    is and left running.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None,
                 resources: Resources | None = None) -> None:
        self.resources = resources or Resources()
        try:
            import ray
        except ImportError:
            raise SignferError(f"--ray needs Ray, which is not installed: {RAY_INSTALL}") from None
        self._ray = ray
        self._started = False
        if ray.is_initialized():
            return
        kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "warning"}
        if address:
            kwargs["address"] = address
        else:
            kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"the Ray cluster at {address}" if address else "a local Ray"
            raise SignferError(f"cannot start or join {where} ({' '.join(str(e).split())[:300]})") from None
        self._started = True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Shut Ray down if this executor started it."""
        if self._started:
            self._ray.shutdown()
            self._started = False

    def run(self, fn: Callable, jobs: Sequence[tuple], *, shared: dict | None = None,
            resources: Resources | None = None, on_start: Callable[[int], None] | None = None,
            catch: tuple[type[BaseException], ...] = ()) -> Iterator[Outcome]:
        """Submit every job at once; yield ``(i, result, None)`` in the order they finish.

        Each value of ``shared`` goes into the object store once. A task that
        raises an exception of a type in ``catch``, or whose worker died more
        often than ``resources.max_retries``, is yielded as ``(i, None, exc)``
        (the exception the task raised, not Ray's wrapper of it); any other
        exception cancels the rest and is raised. ``on_start`` is not called:
        tasks start when the scheduler has room for them.
        """
        ray = self._ray
        res = resources or self.resources
        from signfer import progress

        refs = {k: ray.put(v) for k, v in (shared or {}).items()}
        # a dict of ObjectRefs is passed as one argument: each task fetches the
        # values itself, from the one copy in the object store
        task = ray.remote(_task).options(num_cpus=res.cpus, num_gpus=res.gpus,
                                                max_retries=res.max_retries, retry_exceptions=False)
        settings = progress.settings()
        pending = {task.remote(fn, tuple(job), settings, refs): i for i, job in enumerate(jobs)}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    i = pending.pop(ref)
                    try:
                        yield i, ray.get(ref), None
                    except ray.exceptions.RayTaskError as e:
                        cause = _cause(e)
                        if isinstance(cause, catch):
                            yield i, None, cause
                            continue
                        raise cause from None
                    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as e:
                        if catch:
                            yield i, None, SignferError(
                                f"its Ray worker died {res.max_retries + 1} times ({type(e).__name__})")
                            continue
                        raise SignferError(f"a Ray worker died {res.max_retries + 1} times on the same "
                                           f"task ({type(e).__name__}); see Ray's logs") from None
        finally:
            for ref in pending:
                ray.cancel(ref)


def _task(fn: Callable, job: tuple, settings: dict, refs: dict) -> Any:
    """The body of every Ray task: fetch the shared inputs, match PyTorch's
    threads to the task's CPUs, take the driver's progress policy, run the job."""
    import ray

    from signfer import progress

    progress.configure(**settings)
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(max(1, int(cpus)))
    shared = dict(zip(refs, ray.get(list(refs.values())))) if refs else {}
    return fn(*job, **shared)


def _cause(e: BaseException) -> BaseException:
    """The exception a Ray task raised, unwrapped from Ray's ``RayTaskError``."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException):
        return cause
    return SignferError(" ".join(str(e).split())[:500])


def make_executor(ray_address: str | bool | None, *, num_cpus: int | None = None,
                  resources: Resources | None = None):
    """The executor a ``--ray [ADDRESS]`` option asks for.

    ``None`` or ``False``: :class:`LocalExecutor`. ``True`` or ``"local"``: a
    local Ray with this machine's cores. ``"auto"`` or ``"ray://host:port"``:
    that cluster.
    """
    if ray_address is None or ray_address is False:
        return LocalExecutor()
    address = None if ray_address in (True, "local", "") else str(ray_address)
    return RayExecutor(address, num_cpus=num_cpus, resources=resources)
