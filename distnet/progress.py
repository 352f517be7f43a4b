"""A dependency-free progress line for a terminal: step, epoch, loss, accuracy, throughput."""
from __future__ import annotations

import sys
import time


class ProgressBar:
    def __init__(self, total_steps: int, stream=None, enabled: bool = True, width: int = 24):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.total, self.width = max(total_steps, 1), width
        self._last_draw = 0.0

    def update(self, step: int, epoch: int, loss: float, accuracy: float, images_per_sec: float,
               force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        done = int(self.width * min(step, self.total) / self.total)
        bar = "#" * done + "-" * (self.width - done)
        line = (f"\repoch {epoch} [{bar}] {step}/{self.total} loss {loss:.4f} "
                f"acc {accuracy * 100:5.2f}% {images_per_sec:,.0f} img/s")
        self.stream.write(line)
        self.stream.flush()

    def message(self, text: str) -> None:
        """Print a line without garbling the bar."""
        if self.enabled:
            self.stream.write("\r\033[K")
        print(text, file=self.stream if self.enabled else sys.stdout, flush=True)

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
