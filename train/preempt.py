"""Preemption: SIGTERM or SIGUSR1 (what SLURM sends before it kills a job) asks the
trainer to stop at the end of the current step, write a resume checkpoint and exit
cleanly. Repeated signals change nothing: under SLURM every process of the job step gets
the signal, and launch.sh forwards the one it gets too, so a worker may see it twice;
`kill -9` (or SIGINT) is the way to stop at once.

All processes must stop at the same step, so under torchrun the flag is combined across
processes (a max all-reduce of one value on the CPU, over gloo, so it never waits for
the GPU) before the trainer acts on it.
"""

from __future__ import annotations

import signal
import threading

from strata.train import dist

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preemption:
    """Records whether a stop was requested; `install()` hooks the signals."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        self.signal = signum

    def requested(self) -> bool:
        """True on every process when any process was signalled (a host-side all-reduce:
        no wait on the device)."""
        return dist.agree_any(self.signal is not None)
