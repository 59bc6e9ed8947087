"""Several processes (hosts) as one job: ``jax.distributed`` from flags or the environment.

Every process runs the same command with the same flags except ``--process-id``::

    jaxlogit --coordinator host0:1234 --num-processes 2 --process-id 0 logits ...   # on host0
    jaxlogit --coordinator host0:1234 --num-processes 2 --process-id 1 logits ...   # on host1

(or ``$JAX_COORDINATOR_ADDRESS``, ``$JAX_NUM_PROCESSES``, ``$JAX_PROCESS_ID``). What the
processes share: the cache folder (a filesystem every host mounts), which holds the logit stores
they write together (``jaxlogit.store``: each process attacks and writes its own shards,
process 0 commits the manifest), and the corrector they train together (one global batch
assembled from every process's slice). Everything else (backbone training, predictions,
reports) each process does on its own local devices, as one process would.

A ``Processes`` value names this process in the job and carries the two collectives the
builders need: a barrier and ``together``, which tells every process whether a step failed
anywhere, so no process waits forever for a peer that raised an error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxlogit.errors import JaxlogitError

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"

_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})$")
_FLAGS = "--coordinator HOST:PORT --num-processes N --process-id I"


def initialize(
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> bool:
    """Joins this process to the job, before any jax computation; a no-op when nothing is given.

    Arguments left None are read from ``$JAX_COORDINATOR_ADDRESS``, ``$JAX_NUM_PROCESSES`` and
    ``$JAX_PROCESS_ID``. On CPU the cross-process collectives are gloo's. Calling it again with
    the same job is a no-op.

    Args:
      coordinator: ``HOST:PORT`` of process 0, which every process can reach.
      num_processes: N, the number of processes in the job.
      process_id: this process's index in ``[0, N)``.

    Returns:
      Whether jax runs distributed (False: a single process, nothing was given).

    Raises:
      JaxlogitError: a malformed address, a missing setting, an id outside ``[0, N)``, a job
        already joined with other settings, or jax already computing.
    """
    coordinator = coordinator if coordinator is not None else os.environ.get(ENV_COORDINATOR) or None
    num_processes = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    if coordinator is None and num_processes in (None, 1) and process_id in (None, 0):
        return False
    check_settings(coordinator, num_processes, process_id)
    if jax.distributed.is_initialized():
        if (jax.process_count(), jax.process_index()) != (num_processes, process_id):
            raise JaxlogitError(
                f"this process already joined a job as process {jax.process_index()} of "
                f"{jax.process_count()}; start a new process for process {process_id} of {num_processes}"
            )
        return True
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)
    except RuntimeError as err:
        if "before any JAX" not in str(err):
            raise
        raise JaxlogitError(
            f"jax already computed in this process, too late to join a job; pass {_FLAGS} to the "
            "command itself (before the subcommand), or call jaxlogit.distributed.initialize first"
        ) from None
    return True


def check_settings(coordinator: str | None, num_processes: int | None, process_id: int | None) -> None:
    """Raises a one-line ``JaxlogitError`` naming the fix unless the three settings make a job."""
    if coordinator is None or num_processes is None or process_id is None:
        raise JaxlogitError(
            f"several processes need all of {_FLAGS} (or ${ENV_COORDINATOR}, ${ENV_NUM_PROCESSES}, "
            f"${ENV_PROCESS_ID}); got coordinator={coordinator}, num_processes={num_processes}, "
            f"process_id={process_id}"
        )
    if not _ADDRESS.match(coordinator) or not 0 < int(_ADDRESS.match(coordinator).group(2)) < 65536:
        raise JaxlogitError(
            f"--coordinator {coordinator!r} is not HOST:PORT; pass process 0's host and a free port, "
            "e.g. --coordinator host0:1234"
        )
    if num_processes < 1:
        raise JaxlogitError(f"--num-processes {num_processes}: pass the number of processes, >= 1")
    if not 0 <= process_id < num_processes:
        raise JaxlogitError(
            f"--process-id {process_id} is outside [0, {num_processes}); number the processes "
            f"0 .. {num_processes - 1} (--num-processes {num_processes})"
        )


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise JaxlogitError(f"${name}={value!r} is not an integer; set it to one or unset it") from None


def shutdown() -> None:
    """Leaves the job (a barrier: waits for every process to get here); a no-op in a single process."""
    if jax.distributed.is_initialized():
        jax.distributed.shutdown()


@dataclasses.dataclass(frozen=True)
class Processes:
    """This process's place in a job of several processes, and the collectives builders use.

    Attributes:
      index: this process, in ``[0, count)``.
      count: processes in the job (>= 2).
    """

    index: int
    count: int

    def owns(self, shard: int) -> bool:
        """Whether this process computes ``shard``: shards go round-robin, shard i to process i % count."""
        return shard % self.count == self.index

    def barrier(self, name: str) -> None:
        """Waits until every process reaches the barrier ``name``."""
        multihost_utils.sync_global_devices(name)

    def failed(self, ok: bool) -> list[int]:
        """The processes that report ``ok=False`` (every process must call it)."""
        oks = np.asarray(multihost_utils.process_allgather(np.asarray(ok, np.int32))).reshape(-1)
        return [i for i, flag in enumerate(oks.tolist()) if not flag]

    @contextlib.contextmanager
    def together(self, what: str) -> Iterator[None]:
        """Runs the block on every process, then each learns whether it failed anywhere.

        A process whose block raised re-raises its error; the others raise a ``JaxlogitError``
        naming the processes that failed. Every process must enter the block.
        """
        try:
            yield
        except Exception:
            self.failed(False)
            raise
        failed = self.failed(True)
        if failed:
            raise JaxlogitError(
                f"{what} failed on process(es) {', '.join(map(str, failed))}; read their error, fix it "
                "and rerun every process (finished work is kept)"
            )


def processes() -> Processes | None:
    """This process's ``Processes`` when jax runs several, else None (one process: no collectives)."""
    if jax.process_count() == 1:
        return None
    return Processes(index=jax.process_index(), count=jax.process_count())
