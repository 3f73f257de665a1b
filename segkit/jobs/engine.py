"""Run one function over many items on a local process pool or on Ray.

The function must be a top-level (picklable) callable taking one item and returning a small,
picklable result (a report, not the data). Items are submitted through a bounded window, so
memory stays flat however many there are. Results arrive in completion order with a tqdm
progress bar (counts, rate, ETA). Worker processes run the kernels single-threaded.
"""
from __future__ import annotations

import multiprocessing
import os
import pickle
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator

from tqdm import tqdm
from .._backend import set_num_threads
from ..errors import InputError, MissingPackageError, SegkitError

ENGINES = ("local", "ray")


def describe_item(item: Any, limit: int = 120) -> str:
    """A short name for a work item in messages: a path or name as is; for a tuple, the
    'file_name' of a record in it or its first string/path; else a shortened repr."""
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    if isinstance(item, dict) and "file_name" in item:
        return str(item["file_name"])
    if isinstance(item, (tuple, list)):
        for part in item:
            if isinstance(part, dict) and "file_name" in part:
                return str(part["file_name"])
        for part in item:
            if isinstance(part, (str, os.PathLike)):
                return str(part)
    text = repr(item)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class JobError(SegkitError, RuntimeError):
    """An item failed; the message names it and the cause.

    It crosses processes (pickled), and keeps what the worker raised:

    - ``item``: the work item; ``cause``: ``"<type>: <message>"`` of the worker's exception;
    - ``exception``: that exception itself, its type intact (None when it could not be pickled,
      or when no exception was raised: the worker process died);
    - ``traceback``: the worker's traceback as text (also chained as ``__cause__``, so an
      uncaught JobError prints it).

    The command line prints it as one line when ``exception`` is one of segkit's own errors
    (bad input named by the worker) or None, and with the tracebacks otherwise (a bug).
    """

    #: see segkit.errors.is_user_error
    wraps_worker_exception = True

    def __init__(self, item: Any, cause: str, exception: BaseException | None = None,
                 traceback: str | None = None):
        super().__init__(f"{describe_item(item)}: {cause}")
        self.item = item
        self.cause = cause
        self.exception = exception
        self.traceback = traceback

    def __reduce__(self):
        exception = self.exception
        if exception is not None:
            try:  # the worker's exception travels only if it pickles
                pickle.loads(pickle.dumps(exception))
            except Exception:  # noqa: BLE001 - any pickling failure: keep the text only
                exception = None
        return (_rebuild_job_error, (self.item, self.cause, exception, self.traceback))


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process, as text."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _rebuild_job_error(item, cause, exception, tb) -> JobError:
    err = JobError(item, cause, exception, tb)
    if exception is not None:
        if tb:
            exception.__cause__ = RemoteTraceback(f"\n(in the worker)\n{tb}")
        err.__cause__ = exception
    elif tb:
        err.__cause__ = RemoteTraceback(f"\n(in the worker)\n{tb}")
    return err


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _init_worker() -> None:
    set_num_threads(1)


def _call(fn: Callable, item: Any):
    try:
        return fn(item)
    except JobError:
        raise
    except Exception as exc:  # noqa: BLE001 - re-raised in the parent with the item named
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        raise JobError(item, f"{type(exc).__name__}: {exc}", exc, tb) from exc


def map_items(fn: Callable[[Any], Any], items: Iterable[Any], *, workers: int | None = None,
              engine: str = "local", desc: str = "", unit: str = "item",
              total: int | None = None, progress: bool = True,
              chunksize: int | None = None) -> Iterator[Any]:
    """Yield fn(item) for every item, in completion order.

    workers: processes (local) or concurrent tasks (ray); default all cores. ``workers=1`` with
    the local engine runs in this process (no pool). engine: ``"local"`` or ``"ray"`` (a local
    Ray instance, or the cluster named by ``RAY_ADDRESS``). The first failure stops the job and
    raises :class:`JobError` naming the item. chunksize: items per task on the local pool
    (default: about 1/16 of a worker's share, at most 8, so that per-task costs stay small and
    the last tasks still balance).
    """
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {', '.join(map(repr, ENGINES))}; got {engine!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise InputError(f"workers must be a positive integer or None; got {workers!r}")
    workers = workers or default_workers()
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    bar = tqdm(total=total, desc=desc, unit=unit, disable=not progress, dynamic_ncols=True)
    try:
        if engine == "ray":
            yield from _map_ray(fn, items, workers, bar)
        elif workers == 1:
            for item in items:
                result = _call(fn, item)
                bar.update()
                yield result
        else:
            if chunksize is None:
                chunksize = max(1, min(8, (total or 0) // (16 * workers)))
            yield from _map_local(fn, items, workers, bar, chunksize)
    finally:
        bar.close()


#: Modules the forkserver imports once, so that each worker starts in milliseconds.
FORKSERVER_PRELOAD = ("numpy", "PIL.Image", "PIL.PngImagePlugin", "numba", "segkit",
                      "segkit.jobs.engine")

BROKEN_POOL_HINT = (
    "a worker process died (killed, out of memory, or it could not start: a script that runs "
    "a segkit job with workers > 1 must make the call under `if __name__ == \"__main__\":`, "
    "as multiprocessing requires)")


def _mp_context():
    """Worker processes start from a clean forkserver (spawn where there is none), never by
    forking this process: a fork after OpenMP thread pools have run in the parent (Numba's omp
    layer, libgomp, other libraries') kills or deadlocks the child. As with spawn, the calling
    script's main module is imported in the workers, so it needs the __main__ guard."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(list(FORKSERVER_PRELOAD))
        return ctx
    return multiprocessing.get_context("spawn")


def _call_chunk(fn: Callable, chunk: list) -> list:
    return [_call(fn, item) for item in chunk]


def _chunks(items: Iterable[Any], size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _map_local(fn, items, workers, bar, chunksize=1):
    window = 2 * workers
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker,
                             mp_context=_mp_context()) as pool:
        pending: dict = {}

        def finish(done):
            for fut in done:
                chunk = pending.pop(fut)
                try:
                    results = fut.result()
                except BrokenProcessPool as exc:
                    raise JobError(chunk[0], f"BrokenProcessPool: {BROKEN_POOL_HINT}") from exc
                bar.update(len(chunk))
                yield from results

        def submit(chunk):
            try:
                pending[pool.submit(_call_chunk, fn, chunk)] = chunk
            except BrokenProcessPool as exc:  # a worker died before every chunk was handed out
                raise JobError(chunk[0], f"BrokenProcessPool: {BROKEN_POOL_HINT}") from exc

        try:
            for chunk in _chunks(items, chunksize):
                submit(chunk)
                if len(pending) >= window:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    yield from finish(done)
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                yield from finish(done)
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise


def ray_init(workers: int | None = None):
    """Connect to the cluster in RAY_ADDRESS, or start a local Ray instance (`workers` CPUs,
    default all cores). An instance already initialised in this process is reused."""
    try:
        import ray
    except ImportError as exc:
        raise MissingPackageError("engine='ray' needs Ray: pip install 'segkit[ray]' "
                          f"({type(exc).__name__}: {exc})") from exc

    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False,
                     logging_level="WARNING")
        else:
            ray.init(num_cpus=workers or default_workers(), include_dashboard=False,
                     ignore_reinit_error=True, log_to_driver=False, logging_level="WARNING")
    return ray


def _map_ray(fn, items, workers, bar):
    ray = ray_init(workers)
    remote = ray.remote(num_cpus=1)(_ray_call)
    window = 2 * workers
    fn_ref = ray.put(fn)
    pending = []
    try:
        for item in items:
            pending.append(remote.remote(fn_ref, item))
            if len(pending) >= window:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    bar.update()
                    yield _ray_get(ray, ref)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                bar.update()
                yield _ray_get(ray, ref)
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise


def _ray_call(fn, item):
    _init_worker()
    return _call(fn, item)


def _ray_get(ray, ref):
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:  # unwrap to the JobError raised in the task
        # `exc.cause` is the exception raised in the task (as_instanceof_cause() would give a
        # RayTaskError subclass whose own `cause` attribute is that exception again).
        cause = exc.cause
        if isinstance(cause, JobError):
            raise _rebuild_job_error(cause.item, cause.cause, cause.exception,
                                     cause.traceback) from None
        raise
