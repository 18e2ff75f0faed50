"""Shard the attack and detect steps across processes (torch.distributed), one report at the end.

The work of a step is cut into *chunks* whose composition and random seed depend only on the data
and the seed, never on the number of processes (the attack runner's batches of ``batch_size``
samples, each seeded from its first global index; the detector's chunks of inputs).  Each process
(*rank*) computes the chunks it owns, round robin (chunk ``j`` belongs to rank ``j % world``), and
the per-sample results are all-gathered so that every rank holds the full arrays before the next
step.  The merged results are therefore bit-identical to a single-process run with the same seed.

Two ways to start the processes:

* ``torchrun --nproc-per-node K -m advaudit attack ...`` (also multi-node): every process runs the
  whole command; :func:`run_sharded` sees ``WORLD_SIZE > 1`` and joins the process group from the
  environment.  Only rank 0 writes files and prints.
* ``advaudit attack ... --workers N`` on one machine: :func:`run_sharded` spawns ``N`` processes
  (torch.multiprocessing, start method spawn, gloo over localhost), runs the step in each and hands
  rank 0's result back to the caller.  An :class:`~advaudit.errors.AdvauditError` raised in a worker
  is raised again in the caller (one line, exit 2), a ``MemoryError`` as a ``MemoryError`` (exit 2),
  anything else as a :class:`WorkerCrash` naming the worker's exception type (the CLI's internal
  error, exit 3, with the worker's traceback under ``--verbose``); the other workers are stopped,
  nothing hangs.

The collectives always use gloo: what is exchanged are per-sample numpy arrays on the CPU.  With a
CUDA model each rank uses ``cuda:LOCAL_RANK`` (:meth:`Shard.device`).

API::

    def step(x, y, *, shard: Shard) -> Result: ...        # rank 0's return value is kept
    result = run_sharded(step, 2, x, y)                    # 2 local processes
    run_attacks(model, x, y, choices, eps, shard=shard)    # inside a step
    evaluate(model, clean_x, clean_y, adv_x, groups, cal, shard=shard)
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import sys
import tempfile
import traceback
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from .errors import AdvauditError, UsageError

T = TypeVar("T")
R = TypeVar("R")

TIMEOUT = timedelta(minutes=30)
"""How long a rank waits for the others in a collective before giving up."""


class WorkerCrash(RuntimeError):
    """An unexpected exception in a worker process, raised again in the caller.

    ``type_name`` is the worker's exception type, ``detail`` its message and ``remote_traceback`` its
    traceback (the CLI prints them as an internal error, the traceback only with ``--verbose``)."""

    def __init__(self, rank: int, type_name: str, detail: str, remote_traceback: str) -> None:
        first = next((ln for ln in detail.splitlines() if ln.strip()), "")
        super().__init__(f"worker {rank} failed: {type_name}{': ' + first if first else ''}")
        self.rank = rank
        self.type_name = type_name
        self.detail = f"{first} (in worker {rank})" if first else f"in worker {rank}"
        self.remote_traceback = remote_traceback


def _dist() -> Any:
    import torch.distributed as dist

    return dist


@dataclass(frozen=True)
class Shard:
    """This process's place among ``world`` processes; ``Shard.single()`` is the one-process default."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def single(cls) -> Shard:
        """Rank 0 of 1: no torch.distributed, every method is a no-op or a plain loop."""
        return cls()

    @classmethod
    def current(cls) -> Shard:
        """The initialised default process group (a worker, or under torchrun), else ``single()``."""
        dist = _dist()
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
        return cls.single()

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that writes files and prints."""
        return self.rank == 0

    def mine(self, n_chunks: int) -> list[int]:
        """The chunk ids ``0 <= j < n_chunks`` this rank computes (``j % world == rank``)."""
        return list(range(self.rank, n_chunks, self.world))

    def rows(self, chunks: Sequence[np.ndarray]) -> np.ndarray:
        """The sample indices of this rank's chunks (``chunks[j]`` holds chunk j's indices)."""
        own = [np.asarray(chunks[j]) for j in self.mine(len(chunks))]
        return np.concatenate(own).astype(np.int64) if own else np.zeros(0, dtype=np.int64)

    def merge(self, rows: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        """All-gather per-sample arrays in place: each rank filled ``array[rows]`` for its own
        ``rows``; afterwards every rank holds every rank's rows.  Returns ``arrays``."""
        if self.world == 1:
            return arrays
        gathered: list[Any] = [None] * self.world
        _dist().all_gather_object(gathered, (np.asarray(rows), [a[rows] for a in arrays]))
        for r, (theirs, values) in enumerate(gathered):
            if r != self.rank:
                for a, v in zip(arrays, values):
                    a[theirs] = v
        return arrays

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``[fn(item) for item in items]``, each rank computing its own items, on every rank."""
        if self.world == 1:
            return [fn(item) for item in items]
        own = {j: fn(items[j]) for j in self.mine(len(items))}
        gathered: list[Any] = [None] * self.world
        _dist().all_gather_object(gathered, own)
        merged: dict[int, R] = {}
        for part in gathered:
            merged.update(part)
        return [merged[j] for j in range(len(items))]

    def device(self, device: str) -> str:
        """``cuda`` -> this rank's GPU when sharded (:func:`local_device`); other devices unchanged."""
        return local_device(device, self.local_rank) if self.world > 1 else device


def local_device(device: str, local_rank: int) -> str:
    """``cuda`` -> ``cuda:LOCAL_RANK`` (modulo the GPUs present, so ranks may share one GPU)."""
    if device != "cuda":
        return device
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return f"cuda:{local_rank % count}" if count else device


def env_world() -> int:
    """WORLD_SIZE set by torchrun (1 when not under torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def is_main_process() -> bool:
    """False only on the ranks > 0 of a torchrun job: they must not print or write files."""
    dist = _dist()
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0") or 0) == 0 if env_world() > 1 else True


def _init_from_env() -> Shard:
    """Join torchrun's process group (once per process)."""
    import torch

    dist = _dist()
    if not dist.is_initialized():
        _one_thread_per_rank()
        dist.init_process_group("gloo", init_method="env://", timeout=TIMEOUT)
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available() and torch.cuda.device_count() > local:
            torch.cuda.set_device(local)
    return Shard.current()


def _one_thread_per_rank() -> None:
    """Several ranks on one machine: one intra-op thread each unless OMP_NUM_THREADS says otherwise."""
    import torch

    if "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


def run_sharded(fn: Callable[..., R], workers: int = 1, *args: Any, **kwargs: Any) -> R | None:
    """Run ``fn(*args, shard=Shard, **kwargs)`` on every rank and return rank 0's result.

    * a process group already exists (under torchrun, or inside a worker): call ``fn`` with it;
      ranks > 0 return their own result, which callers ignore (see :func:`is_main_process`);
    * ``WORLD_SIZE > 1`` (torchrun): join the process group from the environment, then as above;
    * ``workers == 1``: call ``fn`` in this process with ``Shard.single()``;
    * ``workers > 1``: spawn ``workers`` local processes (gloo over localhost) and return rank 0's
      result.  ``fn``, ``args`` and ``kwargs`` must pickle (``fn`` a module-level function).  An
      :class:`AdvauditError` or ``MemoryError`` in any worker is raised here again; other failures raise
      :class:`WorkerCrash` (a RuntimeError) with the worker's exception type and traceback.
    """
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    dist = _dist()
    under_group = dist.is_available() and dist.is_initialized()
    if under_group or env_world() > 1:
        if workers > 1:
            raise UsageError("--workers cannot be combined with torchrun", "torchrun already starts the processes")
        shard = Shard.current() if under_group else _init_from_env()
        return fn(*args, shard=shard, **kwargs)
    if workers == 1:
        return fn(*args, shard=Shard.single(), **kwargs)
    return _spawn(fn, workers, args, kwargs)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _dump(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".part")
    with open(tmp, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


def _worker(rank: int, fn: Callable[..., Any], args: tuple, kwargs: dict, world: int, port: int, box: str) -> None:
    """One spawned rank: join the group, run ``fn``, leave rank 0's result (or an error) in ``box``."""
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist = _dist()
    out = Path(box)
    try:
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, timeout=TIMEOUT
        )
        result = fn(*args, shard=Shard(rank, world, rank), **kwargs)
        if rank == 0:
            _dump(out / "result.pkl", result)
        # every rank reaches this point before any tears the group down: a rank that destroyed its gloo
        # group while another was still in a collective was seen to abort ("terminate called without an
        # active exception", SIGABRT) once in CI
        dist.barrier()
    except AdvauditError as exc:
        # the files in box are ours (a private temporary folder), never user input
        _dump(out / f"error-{rank}.pkl", (type(exc), exc.message, exc.hint, str(exc)))
        sys.exit(2)
    except BaseException as exc:
        _dump(out / f"crash-{rank}.pkl", (type(exc).__name__, str(exc), traceback.format_exc(),
                                          isinstance(exc, MemoryError)))
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _spawn(fn: Callable[..., R], workers: int, args: tuple, kwargs: dict) -> R:
    import torch.multiprocessing as mp

    # join() logs "Terminating process N via signal SIGTERM" when it stops the others after a failure:
    # the failure itself is reported once, as one line, by the caller.
    spawn_log = logging.getLogger("torch.multiprocessing.spawn")
    level = spawn_log.level
    spawn_log.setLevel(logging.ERROR)
    try:
        return _spawn_quiet(mp, fn, workers, args, kwargs)
    finally:
        spawn_log.setLevel(level)


def _spawn_quiet(mp: Any, fn: Callable[..., R], workers: int, args: tuple, kwargs: dict) -> R:
    with tempfile.TemporaryDirectory(prefix="advaudit-shard-") as box:
        ctx = mp.start_processes(
            _worker, args=(fn, args, kwargs, workers, _free_port(), box), nprocs=workers, join=False,
            start_method="spawn",
        )
        try:
            while not ctx.join():
                pass
        except Exception:
            # join() has already stopped the other workers; report the first user-facing error
            _raise_worker_error(Path(box))
            raise
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
                    p.join()
        with open(Path(box) / "result.pkl", "rb") as f:
            return pickle.load(f)  # written by our rank 0 above


def _raise_worker_error(box: Path) -> None:
    errors = sorted(box.glob("error-*.pkl"), key=lambda p: int(p.stem.split("-")[1]))
    if errors:
        with open(errors[0], "rb") as f:
            cls, message, hint, text = pickle.load(f)
        try:
            exc = cls(message, hint)
        except Exception:
            exc = UsageError(text)
        raise exc from None
    crashes = sorted(box.glob("crash-*.pkl"), key=lambda p: p.stat().st_mtime_ns)  # the first one
    if crashes:
        with open(crashes[0], "rb") as f:
            name, detail, text, memory = pickle.load(f)
        if memory:
            raise MemoryError(detail or "a worker ran out of memory") from None
        raise WorkerCrash(int(crashes[0].stem.split("-")[1]), name, detail, text) from None


__all__ = ["Shard", "WorkerCrash", "env_world", "is_main_process", "local_device", "run_sharded"]
