"""Ctrl-C (SIGINT) or SIGTERM during training: finish the step, save a checkpoint, exit, say how to resume.

SIGTERM is handled too because that is how SLURM and the launchers (accelerate, torchrun) ask a job to stop;
they wait a grace period before SIGKILL. A second signal, given 2 s or more after the first, acts at once (the old handler takes it).
"""

from __future__ import annotations

import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from llm_tune.console import say

EXIT_CODE = 130  # the shell's code for a job stopped by Ctrl-C
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_ECHO_S = 2.0  # a repeat within this long is the same request, not "stop at once"


class GracefulStop:
    """Context manager around trainer.train(): a signal asks the trainer to save and stop after this step."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.stopped_at: int | None = None
        self._previous: dict[int, Any] = {}
        self._first = 0.0

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():  # Python only lets the main thread set handlers
            for sig in _SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)

    def _handle(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if self.signal_name is None:
            self.signal_name, self._first = signal.Signals(signum).name, now
            say(f"{self.signal_name}: saving a checkpoint after this step, then stopping (again to stop at once)")
            return
        # Under accelerate or torchrun one Ctrl-C arrives twice: from the terminal, and forwarded by the launcher.
        if now - self._first < _ECHO_S:
            return
        signal.signal(signum, self._previous[signum])
        signal.raise_signal(signum)

    def callback(self) -> Any:
        from transformers import TrainerCallback

        from llm_tune.ranks import any_rank

        outer = self

        class StopOnSignal(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                # Every rank must stop after the same step, or the others wait forever in the next all-reduce.
                if any_rank(outer.signal_name is not None, args.device) and state.global_step < state.max_steps:
                    control.should_save = True
                    control.should_training_stop = True
                    outer.stopped_at = state.global_step

        return StopOnSignal()

    def exit_if_stopped(self, checkpoints: Path) -> None:
        if self.stopped_at is None:
            return
        name = self.signal_name or "a signal on another rank"
        say(
            f"stopped by {name} at step {self.stopped_at}; checkpoint saved in {checkpoints / f'checkpoint-{self.stopped_at}'}"
        )
        say(f"resume with: {resume_command()}")
        raise SystemExit(EXIT_CODE)


def resume_command() -> str:
    """This run's own command line, with training.resume=auto in place of any resume it had."""
    from llm_tune.train.launch import launcher_command

    command = launcher_command() or ["python", "-m", "llm_tune", *sys.argv[1:]]
    kept = [part for part in command if not part.startswith("training.resume=")]
    return shlex.join([*kept, "training.resume=auto"])
