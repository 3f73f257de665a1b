"""Where :func:`segkit.recipe.trainings.run_trainings` runs its trainings besides this process:
one per GPU in subprocesses (``python -m segkit.recipe._trainings_engines SPEC`` with its own
``CUDA_VISIBLE_DEVICES``), or as Ray tasks. Neither schedules anything itself: a thread per GPU
takes the next task, and Ray places its tasks by their resources."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

from tqdm import tqdm

from ..jobs.engine import ray_init
from .trainings import (LOG_FILE, RESULT_FILE, TrainingError, TrainTask, _describe, _fail,
                        _prepare, _report, train_task)


def run_gpus(todo, digests, gpus: int, log, results) -> None:
    """One training per GPU at a time, each in a subprocess that sees only its GPU."""
    import queue
    from concurrent.futures import ThreadPoolExecutor, as_completed

    free: queue.Queue = queue.Queue()
    for gpu in range(gpus):
        free.put(gpu)

    def launch(task: TrainTask) -> dict:
        gpu = free.get()
        try:
            _prepare(task, digests[task.name])  # task.json first: the log below is the task's
            spec = json.dumps({"task": dataclasses.asdict(task), "hash": digests[task.name]})
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu)}
            with open(Path(task.work_dir) / LOG_FILE, "a") as out:
                proc = subprocess.run([sys.executable, "-m", "segkit.recipe._trainings_engines", spec],
                                      env=env, stdout=out, stderr=subprocess.STDOUT)
            if proc.returncode:
                raise TrainingError(f"exit status {proc.returncode}")
            return json.loads((Path(task.work_dir) / RESULT_FILE).read_text())["result"]
        finally:
            free.put(gpu)

    failures: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=gpus) as pool:
        futures = {pool.submit(launch, t): t for t in todo}
        for fut in as_completed(futures):
            task = futures[fut]
            try:
                results[task.name] = fut.result()
                _report(task, results[task.name], log)
            except Exception as exc:  # noqa: BLE001 - collected, raised at the end
                failures[task.name] = _describe(exc)
    if failures:
        raise _fail(failures, {t.name: t for t in todo})


def ray_train(task_dict: dict, digest: str) -> dict:
    return train_task(TrainTask(**_task_fields(task_dict)), digest)


def _task_fields(d: dict) -> dict:
    d = dict(d)
    d["cfg_options"] = tuple(tuple(kv) for kv in d.get("cfg_options", ()))
    return d


def run_ray(todo, digests, gpus_per_task, progress, log, results) -> None:
    ray = ray_init()
    remote = ray.remote(num_cpus=1, num_gpus=gpus_per_task or 0)(ray_train)
    refs = {remote.remote(dataclasses.asdict(t), digests[t.name]): t for t in todo}
    failures: dict[str, str] = {}
    pending = list(refs)
    with tqdm(total=len(refs), desc="trainings (ray)", unit="model", disable=not progress,
              dynamic_ncols=True) as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                task = refs[ref]
                try:
                    results[task.name] = ray.get(ref)
                    _report(task, results[task.name], log)
                except Exception as exc:  # noqa: BLE001 - collected, raised at the end
                    cause = getattr(exc, "cause", None) or exc
                    failures[task.name] = _describe(cause)
                bar.update()
    if failures:
        raise _fail(failures, {t.name: t for t in todo})


def main(argv: list[str] | None = None) -> int:
    """``python -m segkit.recipe._trainings_engines SPEC``: one training from a json spec
    ``{"task": {...}, "hash": str}`` (what :func:`run_gpus` launches)."""
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(argv[0])
    train_task(TrainTask(**_task_fields(spec["task"])), spec["hash"])
    return 0


if __name__ == "__main__":  # pragma: no cover - run by run_gpus in a subprocess
    sys.exit(main())
