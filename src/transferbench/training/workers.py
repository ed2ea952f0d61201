"""The train stage's runs and tuning trials, GPUs x k at once, each worker process on a GPU slot of its own.

The reference recipes train at batch 16-20, which leaves a GPU mostly idle (docs/benchmarks.md); the runs
of an experiment (arms x shares x seeds) and the tuning trials before them (arms x shares x factors) are
independent of each other, so where the machine has more than one GPU slot (GPUs x params'
``gpu_runs_per_device``, transferbench.core.devices) the stage's process only coordinates: it starts one
worker process per slot, each claiming its slot (``CUDA_VISIBLE_DEVICES`` and its share of the GPU's
memory, before its backend starts) and training one job after another. An arm's runs start as soon as
its trials have chosen its rate. This process starts no backend, so it holds no GPU memory.

Each job is the same function the stage calls in its own process (transferbench.training.train): the
same seeds, data order and files, so a run is the run trained alone, bit for bit (a worker's process is
what a one-slot stage's process is). What makes a stage resumable stays as it is: finished trials and
runs leave their files in the stage's work folder, a run folder appears by one rename, and the output is
published once every run is there. Every run is its own MLflow run under the experiment's parent run,
which the first worker to start a run opens (one at a time: a lock file in the work folder).

A worker that fails stops the stage with its error (a UserError keeps its one line); the other workers
are interrupted as Ctrl-C would (their MLflow runs marked KILLED, their work folders resumable) and the
parent run is ended KILLED. A worker whose coordinator dies is interrupted too (Linux' parent-death
signal), so no training goes on unseen.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import traceback
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from transferbench.core import backend, devices, paths
from transferbench.core.redact import RedactingFilter
from transferbench.study import runs
from transferbench.study.experiments import Experiment
from transferbench.study.params import Params
from transferbench.tracking import mlflow_runs as tracking
from transferbench.training.publish import publish
from transferbench.training.tuning import UNTUNED, Tuned, decided

log = logging.getLogger(__name__)

STOP_SECONDS = 120.0  # how long interrupted workers get to mark their MLflow runs KILLED before being killed


@dataclass(frozen=True)
class Job:
    """A tuning trial of an arm at ``factor`` (at the arm's first run), or a run at its arm's ``tuned`` rate.

    ``run`` indexes the stage's runs (study.runs.runs, which every worker lists alike): an Experiment holds its
    dataset's registry entry, which does not pickle.
    """

    run: int
    factor: float | None = None
    tuned: Tuned | None = None

    def label(self, experiments: list[Experiment]) -> str:
        what = f"tuning trial x{self.factor:g}" if self.factor is not None else "run"
        experiment = experiments[self.run]
        return f"{experiment.name} {runs.run_name(experiment)} {what}"


class WorkerFailed(Exception):
    """Where a worker's error came from: its traceback, as the worker printed it."""


class SharedParent(tracking.ParentRun):
    """The experiment's parent run, found or created by one worker at a time: with an MLflow server there is
    no store lock, and two workers finding none at once would each create one."""

    def __init__(self, experiments: list[Experiment], lock: Path):
        super().__init__(experiments)
        self.lock = lock

    def open(self) -> str:
        if self.run_id is None:
            self.lock.parent.mkdir(parents=True, exist_ok=True)
            with open(self.lock, "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    self.run_id = tracking.parent_run(self.experiments[0])
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
        return self.run_id


def arm_of(experiment: Experiment) -> tuple[str, float]:
    """An arm at a share of the training split: what tunes once, at its first seed, for all its runs."""
    return experiment.weights_label, experiment.train_fraction


def first_jobs(experiments: list[Experiment], params: Params) -> tuple[list[Job], dict[tuple, list[int]]]:
    """The jobs that can start at once (every arm's trials, or every run when nothing is tuned), and each
    arm's runs (indices into ``experiments``), in the stage's order."""
    arms: dict[tuple, list[int]] = {}
    for index, e in enumerate(experiments):
        arms.setdefault(arm_of(e), []).append(index)
    if params.tuning.kind == "none":
        return [Job(index, tuned=UNTUNED) for index in range(len(experiments))], arms
    return [Job(group[0], factor=f) for group in arms.values() for f in params.tuning.factors], arms


def run_in_workers(params: Params, name: str, slots: int, work_root: Path | None = None) -> None:
    """Train every run of experiment ``name`` in ``slots`` worker processes; publish them as the stage does."""
    experiments = runs.runs(params, name)
    work_root = work_root or paths.tmp_dir("train", name)
    jobs, arms = first_jobs(experiments, params)
    workers = min(slots, max(len(jobs), len(experiments)))  # every run can train at once once tuned
    log.info("%s: %d run(s) (%s), %d at once in worker processes (%d GPU slot(s): %d per GPU)", name,
             len(experiments), ", ".join(runs.run_name(e) for e in experiments), workers, slots,
             params.gpu_runs_per_device)
    parent = SharedParent(experiments, work_root / "parent.lock")
    try:
        done = Coordinator(params, name, work_root, parent, workers, experiments).run(jobs, arms)
    except BaseException:
        parent.end(status="KILLED")
        raise
    parent.end()
    publish(name, {runs.run_name(e): done[runs.run_name(e)] for e in experiments}, work_root)


class Coordinator:
    """Hands jobs to idle workers, an arm's runs once its trials are scored; stops them all on a failure."""

    def __init__(self, params: Params, name: str, work_root: Path, parent: SharedParent, workers: int,
                 experiments: list[Experiment]):
        self.params, self.name, self.work_root, self.parent = params, name, work_root, parent
        self.count, self.experiments = workers, experiments
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self.pipes: list[Connection] = []
        self.busy: dict[int, Job] = {}

    def run(self, jobs: list[Job], arms: dict[tuple, list[int]]) -> dict[str, Path]:
        queue: deque[Job] = deque(jobs)
        scores: dict[tuple, dict[float, float]] = {}
        finished: dict[str, Path] = {}
        try:
            self.start()
            idle = list(range(self.count))
            while queue or self.busy:
                while queue and idle:
                    self.send(idle.pop(0), queue.popleft())
                worker, job, result = self.next_result()
                idle.append(worker)
                experiment = self.experiments[job.run]
                if job.factor is None:
                    finished[runs.run_name(experiment)] = Path(result)
                    continue
                arm = arm_of(experiment)
                scores.setdefault(arm, {})[job.factor] = float(result)
                if len(scores[arm]) == len(self.params.tuning.factors):
                    factors = self.params.tuning.factors
                    tuned = decided(experiment, self.params.tuning, [scores[arm][f] for f in factors])
                    queue.extend(Job(index, tuned=tuned) for index in arms[arm])
        except BaseException as err:
            self.stop(interrupt=not isinstance(err, KeyboardInterrupt))  # Ctrl-C reached the workers already
            raise
        self.stop(interrupt=False)
        return finished

    def start(self) -> None:
        # spawn, not fork: a forked child would share this process's state (MLflow's clients, threads).
        context = multiprocessing.get_context("spawn")
        logging_setup = _logging_setup()
        for index in range(self.count):
            ours, theirs = context.Pipe()
            process = context.Process(target=work, name=f"train-worker-{index}",
                                      args=(theirs, self.params, self.name, self.work_root, self.parent.lock,
                                            logging_setup))
            process.start()
            theirs.close()
            self.processes.append(process)
            self.pipes.append(ours)

    def label(self, job: Job) -> str:
        return job.label(self.experiments)

    def send(self, worker: int, job: Job) -> None:
        self.busy[worker] = job
        try:
            self.pipes[worker].send(job)
        except OSError:  # it is gone: next_result finds its sentinel and says so
            pass

    def next_result(self) -> tuple[int, Job, Any]:
        """The next finished job's worker, job and result; raises the first failure."""
        while True:
            waited: dict[Any, int] = {self.pipes[w]: w for w in self.busy}
            waited.update({self.processes[w].sentinel: w for w in self.busy})
            ready = {waited[item] for item in wait(list(waited))}
            for worker in sorted(ready):
                message = None
                with contextlib.suppress(EOFError, OSError):
                    if self.pipes[worker].poll():
                        message = self.pipes[worker].recv()
                if message is None:
                    if self.processes[worker].is_alive():
                        continue
                    self.processes[worker].join()
                    job = self.busy.pop(worker)
                    process = self.processes[worker]
                    raise WorkerFailed(f"{self.label(job)}: its worker process (pid {process.pid}) ended with exit "
                                       f"code {process.exitcode} before finishing it")
                job = self.busy.pop(worker)
                kind, payload, parent_id = message
                self.parent.run_id = self.parent.run_id or parent_id
                if kind == "done":
                    log.info("%s: done", self.label(job))
                    return worker, job, payload
                error, text = payload
                log.error("%s: failed in its worker process (pid %s)", self.label(job), self.processes[worker].pid)
                if isinstance(error, KeyboardInterrupt):
                    raise WorkerFailed(f"{self.label(job)}: its worker process was interrupted")
                raise error from WorkerFailed(text)

    def stop(self, interrupt: bool) -> None:
        """Idle workers told to exit; busy ones interrupted (``interrupt``) or left to exit on the Ctrl-C they
        got; any still alive after STOP_SECONDS killed."""
        for worker, pipe in enumerate(self.pipes):
            if worker not in self.busy:
                with contextlib.suppress(OSError):
                    pipe.send(None)
            elif interrupt and self.processes[worker].is_alive() and (pid := self.processes[worker].pid):
                os.kill(pid, signal.SIGINT)
        for process in self.processes:
            process.join(STOP_SECONDS)
            if process.is_alive():
                process.kill()
                process.join()
        for worker, job in self.busy.items():  # what the interrupted ones said: the parent run they opened
            with contextlib.suppress(EOFError, OSError):
                while self.pipes[worker].poll():
                    _, _, parent_id = self.pipes[worker].recv()
                    self.parent.run_id = self.parent.run_id or parent_id
            log.warning("%s: interrupted; the stage's next run resumes it", self.label(job))
        for pipe in self.pipes:
            pipe.close()


def _logging_setup() -> tuple[str | None, str | None, int]:
    """The stage's log format and our loggers' level, for the workers to log alike."""
    handlers = logging.getLogger().handlers
    formatter = handlers[0].formatter if handlers else None
    fmt = getattr(formatter, "_fmt", None)
    datefmt = getattr(formatter, "datefmt", None)
    return fmt, datefmt, logging.getLogger("transferbench").getEffectiveLevel()


def _worker_logging(fmt: str | None, datefmt: str | None, level: int) -> None:
    logging.basicConfig(format=fmt or logging.BASIC_FORMAT, datefmt=datefmt, level=logging.WARNING,
                        stream=sys.stderr)
    logging.getLogger("transferbench").setLevel(level)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())


def _die_with_parent() -> None:
    """SIGINT when the coordinator dies (Linux' PR_SET_PDEATHSIG), as Ctrl-C: a killed stage leaves no worker
    training on; elsewhere nothing (the coordinator still stops its workers whenever it can)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGINT)  # 1: PR_SET_PDEATHSIG


def _report(pipe: Connection, parent: SharedParent, err: BaseException) -> None:
    """Sends the coordinator this worker's failure: the error (itself when it pickles) and its traceback."""
    text = "".join(traceback.format_exception(err))
    try:
        pickle.dumps(err)
        error: BaseException = err
    except Exception:  # noqa: BLE001 - an error that does not pickle still reaches the coordinator as text
        error = WorkerFailed(f"{type(err).__name__}: {err}")
    with contextlib.suppress(OSError):
        pipe.send(("failed", (error, text), parent.run_id))


def work(pipe: Connection, params: Params, name: str, work_root: Path, parent_lock: Path,
         logging_setup: tuple[str | None, str | None, int]) -> None:
    """A worker: train the jobs sent until told to stop (None). Before the first, claim a GPU slot and start
    the backend (CUDA and JAX read the slot's settings once, at their start)."""
    _die_with_parent()
    _worker_logging(*logging_setup)
    experiments = runs.runs(params, name)
    parent = SharedParent(experiments, parent_lock)
    policy: str | None = None
    while True:
        try:
            job = pipe.recv()
        except (EOFError, KeyboardInterrupt):  # the coordinator is gone, or Ctrl-C while idle
            return
        if job is None:
            return
        try:
            if policy is None:
                devices.claim_gpu(params.distribution, per_gpu=params.gpu_runs_per_device)
                backend.select()
            from transferbench.training import train  # Keras: only once the slot is claimed

            if policy is None:
                policy, _ = train.start(params, name)
            experiment = experiments[job.run]
            if job.factor is not None:
                result: Any = train.trial(experiment, params, job.factor, work_root)
            else:
                result = str(train.train_tuned(experiment, work_root, policy, job.tuned, parent))
        except BaseException as err:  # noqa: BLE001 - every failure goes to the coordinator, which stops the stage
            _report(pipe, parent, err)
            return
        pipe.send(("done", result, parent.run_id))
