"""Training progress on rank 0: a tqdm bar on a terminal, plain lines anywhere else.

The bar shows epoch, step, loss, accuracy, images/s and tqdm's ETA.  Without a terminal (a
log file, CI, a pipe) a redrawn bar is noise, so the same figures come as plain lines, one
per tenth of the run; without tqdm (it is an optional extra, ``pip install
'distnet[progress]'``) they come as plain lines too.  ``enabled=False`` (``--no-progress``)
shows neither.  Messages (evaluation results, resumes) are printed so that they never
garble the bar.
"""
from __future__ import annotations

import sys
import time

PLAIN_LINES = 10  # plain progress lines per run


def _load_tqdm():
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"


class ProgressBar:
    def __init__(self, total_steps: int, stream=None, enabled: bool = True, steps_per_epoch: int | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.total = max(total_steps, 1)
        self.steps_per_epoch = steps_per_epoch
        self.enabled = enabled
        terminal = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._tqdm = _load_tqdm() if enabled and terminal else None
        self._bar = None
        self._started = None
        self._next_line = 0

    def _epochs(self, epoch: int) -> str:
        if self.steps_per_epoch:
            return f"epoch {epoch}/{-(-self.total // self.steps_per_epoch)}"
        return f"epoch {epoch}"

    def update(self, step: int, epoch: int, loss: float, accuracy: float, images_per_sec: float,
               force: bool = False) -> None:
        if not self.enabled:
            return
        if self._started is None:
            # started here, not in __init__: a resumed run's first step is not step 1, and
            # its rate and ETA must count only the steps this run does
            self._started = (time.monotonic(), step)
            if self._tqdm is not None:
                self._bar = self._tqdm(total=self.total, initial=step - 1, file=self.stream, unit="step",
                                       dynamic_ncols=True, leave=True, smoothing=0.1)
        if self._bar is not None:
            self._bar.set_description_str(self._epochs(epoch), refresh=False)
            acc = "" if accuracy is None else f" acc {accuracy * 100:5.2f}%"  # None: regression
            self._bar.set_postfix_str(f"loss {loss:.4f}{acc} {images_per_sec:,.0f} img/s",
                                      refresh=False)
            self._bar.update(step - self._bar.n)
            return
        every = max(1, -(-self.total // PLAIN_LINES))
        if not force and step < self.total and step < self._next_line:
            return
        self._next_line = (step // every + 1) * every
        t0, s0 = self._started
        elapsed = time.monotonic() - t0
        done = step - s0
        eta = _clock(elapsed / done * (self.total - step)) if done > 0 else "--:--"  # no rate yet
        acc = "" if accuracy is None else f" acc {accuracy * 100:.2f}%"  # None: regression
        print(f"{self._epochs(epoch)} step {step}/{self.total} loss {loss:.4f}{acc} "
              f"{images_per_sec:,.0f} img/s eta {eta}", file=sys.stdout, flush=True)

    def message(self, text: str) -> None:
        """Print a line without garbling the bar."""
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=sys.stdout, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
