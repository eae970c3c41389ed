"""A run's workdir while it trains: its lock, its metrics log, and how a run
stops (a signal, a full disk).

`loop.fit` holds `WorkdirLocks` and `StopOnSignal` around a run and appends
to a `MetricsLog`; the errors are raised by `fit` and re-exported by `loop`.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import threading
import time
import warnings
from typing import Optional, Sequence

try:
  import fcntl
except ImportError:  # pragma: no cover - not POSIX
  fcntl = None  # type: ignore[assignment]  # no locks: `_lock` checks for None

import jax
import numpy as np

#: The lock file a run holds in its workdir.
LOCK_FILE = ".lock"


class WorkdirLockedError(RuntimeError):
  """Another run is training in the workdir.

  Raised by `fit` and `fit_seeds` before anything is loaded or compiled when
  another run (another process, or another call in this one) holds the
  workdir's lock, `workdir/.lock`. The lock is released when that run ends,
  also when it crashes or is killed. A `RuntimeError`.
  """


class DiskFull(OSError):
  """The disk filled up during training (`errno.ENOSPC`).

  Raised by `fit` and `fit_seeds` in place of the error deep inside orbax,
  TensorStore or a log write, so that its message is the last thing a user
  reads. Every complete checkpoint is kept; free space and run the same
  command again to resume. An `OSError`.
  """


def is_disk_full(error: BaseException) -> bool:
  """Whether `error`, or an error it was raised from, is a full disk."""
  seen = set()
  link: Optional[BaseException] = error
  while link is not None and id(link) not in seen:
    seen.add(id(link))
    if isinstance(link, OSError) and link.errno == errno.ENOSPC:
      return True
    if "No space left on device" in str(link):
      return True
    link = link.__cause__ or link.__context__
  return False


class TrainingInterrupted(KeyboardInterrupt):
  """SIGINT (Ctrl-C) or SIGTERM stopped the run.

  Raised by `fit` and `fit_seeds` at the end of the call (`steps_per_call`
  steps) the signal arrived in, once the checkpoint being written is
  complete: every complete checkpoint is kept, and running the same command
  again resumes from the latest. A signal before training starts (loading,
  restoring) raises it at once. A `KeyboardInterrupt`, so `except Exception`
  does not catch it.

  Attributes:
    signum: the signal's number (`signal.SIGINT` or `signal.SIGTERM`).
    step: the last step computed, or None before training started.
  """

  def __init__(self, message: str, signum: int, step: Optional[int]):
    super().__init__(message)
    self.signum, self.step = signum, step


class StepRate:
  """Steps per second since the previous call (for the metrics log)."""

  def __init__(self, step: int):
    self._time, self._step = time.perf_counter(), step

  def __call__(self, step: int) -> float:
    now = time.perf_counter()
    rate = (step - self._step) / (now - self._time)
    self._time, self._step = now, step
    return rate


class MetricsLog:
  """Appends metrics as JSON lines (process 0 only), keeping resumes clean.

  On resume, lines logged after the restored step (work redone after a
  crash, or past a corrupt checkpoint the run fell back from) are dropped,
  so every step appears once and the log ends at the restored step. A torn
  last line (a run killed mid-write) is dropped with a warning; a garbled
  line before the last raises ValueError naming the file and line. The file
  is rewritten atomically (a kill meanwhile leaves the old one).
  """

  def __init__(self, path: str, resume_step: int, enabled: bool):
    self._path = path
    self._enabled = enabled
    if enabled and os.path.exists(path):
      with open(path, encoding="utf-8", errors="replace") as f:
        lines = [(number, line) for number, line in enumerate(f, 1)
                 if line.strip()]
      kept = []
      for index, (number, line) in enumerate(lines):
        try:
          step = json.loads(line)["step"]
          if isinstance(step, bool) or not isinstance(step, int):
            raise TypeError(f"step {step!r} is not an int")
        except (ValueError, KeyError, TypeError) as error:
          if index == len(lines) - 1:
            warnings.warn(
                f"{path}: dropped its last line, which is torn (a run killed "
                f"while writing it?): {line.strip()!r:.80}", stacklevel=3)
            continue
          raise ValueError(
              f"{path} line {number} is not a metrics record ({error}): "
              f"{line.strip()!r:.80}. Fix or delete that line to resume."
          ) from error
        if step <= resume_step:
          kept.append(line if line.endswith("\n") else line + "\n")
      temporary = f"{path}.tmp-{os.getpid()}"
      with open(temporary, "w") as f:
        f.writelines(kept)
      os.replace(temporary, path)

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if self._enabled:
      with open(self._path, "a") as f:
        f.write(json.dumps({"step": step, **metrics}) + "\n")


def _lock(workdir: str) -> Optional[int]:
  """Takes `workdir`'s lock: the file descriptor holding it (None where the
  file system has no locks, with a warning). Raises WorkdirLockedError."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  if fcntl is None:  # pragma: no cover - not POSIX
    warnings.warn(f"no file locks on this system: {workdir} is not locked "
                  "against a second run.", stacklevel=4)
    return None
  descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as error:
    holder = os.pread(descriptor, 200, 0).decode(errors="replace").strip()
    os.close(descriptor)
    if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
      holder = holder or "holder unknown"
      raise WorkdirLockedError(
          f"the workdir {workdir} is in use by another run ({holder}; lock "
          f"{path}): wait for that run to end, or "
          "use another --workdir. The lock goes when that run's process ends, "
          "even by a crash.") from None
    warnings.warn(f"cannot lock {path} ({error}): {workdir} is not locked "
                  "against a second run.", stacklevel=4)
    return None
  os.ftruncate(descriptor, 0)
  os.pwrite(descriptor, f"pid {os.getpid()} on {socket.gethostname()} since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S %z')}\n".encode(), 0)
  return descriptor


class WorkdirLocks:
  """Holds the lock of each workdir (of each seed for an ensemble) while a
  run trains. Process 0 of a multi-process run holds them for the run (the
  processes share the workdir); the others learn whether it could."""

  def __init__(self, workdirs: Sequence[str]):
    self._workdirs = list(workdirs)
    self._held: list[int] = []

  def __enter__(self):
    error, failed = None, -1
    if jax.process_index() == 0:
      for index, workdir in enumerate(self._workdirs):
        try:
          descriptor = _lock(workdir)
        except WorkdirLockedError as e:
          error, failed = e, index
          break
        if descriptor is not None:
          self._held.append(descriptor)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      failed = int(multihost_utils.broadcast_one_to_all(np.int32(failed)))
    if failed >= 0:
      self._release()
      raise error or WorkdirLockedError(
          f"the workdir {self._workdirs[failed]} is in use by another run "
          f"(process 0 of this run found its lock taken): wait for that run "
          f"to end, or use another --workdir.")
    return self

  def _release(self) -> None:
    while self._held:
      os.close(self._held.pop())  # closing the descriptor releases the lock

  def __exit__(self, *exc_info):
    self._release()


class StopOnSignal:
  """SIGINT and SIGTERM while a run is in `fit`.

  Before training starts they raise TrainingInterrupted at once; once
  `defer()` is called (the training loop), the first one is only recorded,
  for the loop to stop at its next step boundary (`requested`), after the
  save being written, and a second one ends the process at once (complete
  checkpoints are on disk: orbax renames a checkpoint into place only once
  it is complete). Handlers are installed only from the main thread, and
  the previous ones are put back on exit.
  """

  SIGNALS = (signal.SIGINT, signal.SIGTERM)

  def __init__(self):
    self.signum: Optional[int] = None
    self._deferred = False
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signum in self.SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info):
    for signum, handler in self._previous.items():
      signal.signal(signum, signal.SIG_DFL if handler is None else handler)

  def defer(self) -> None:
    self._deferred = True

  def _handle(self, signum, frame) -> None:
    name = signal.Signals(signum).name
    if not self._deferred:
      raise TrainingInterrupted(
          f"stopped by {name} before training started; nothing was saved "
          "since the latest checkpoint.", signum, None)
    if self.signum is not None:
      os.write(2, f"\n{name} again: stopping at once; every complete "
               "checkpoint is kept, the one being written (if any) is "
               "dropped.\n".encode())
      os._exit(128 + signum)
    self.signum = signum
    os.write(2, f"\n{name}: stopping at the end of this call, once the "
             f"checkpoint being written is complete (again: stop at "
             f"once).\n".encode())

  def requested(self) -> Optional[int]:
    """The signal that asked the run to stop, or None; in a multi-process
    run, whether any process got one (every process stops at the same
    step)."""
    signum = self.signum or 0
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      signum = int(np.max(multihost_utils.process_allgather(
          np.int32(signum))))
    return signum or None


__all__ = ["DiskFull", "LOCK_FILE", "MetricsLog", "StopOnSignal",
           "TrainingInterrupted", "WorkdirLockedError", "WorkdirLocks",
           "is_disk_full"]
