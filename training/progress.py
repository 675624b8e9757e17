"""One progress bar for every training loop: over steps, or over seconds when a time limit caps
the run.

A bar over 100,000 steps for a stage capped at 10 minutes shows an ETA of hours for a stage that
ends in minutes; a capped run's bar counts seconds against the limit instead, with the step it is
at and the steps it will reach in the limit at its current pace beside it.
"""

from __future__ import annotations

import time

from tqdm import tqdm

TIMED_FORMAT = (
    "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]"
)


class Progress:
    """``update(step, **postfix)`` after every step; ``out_of_time()`` ends a capped run.
    ``total_steps`` 0 means no step cap (a run capped by time alone)."""

    def __init__(
        self, total_steps: int, start: int, limit_s: float, quiet: bool, desc: str = "training"
    ) -> None:
        self.total_steps, self.start, self.limit_s = total_steps, start, limit_s
        self.t0 = time.perf_counter()
        if limit_s > 0:
            self.bar = tqdm(
                total=limit_s, desc=desc, bar_format=TIMED_FORMAT, disable=quiet, dynamic_ncols=True
            )
        else:
            self.bar = tqdm(
                total=total_steps,
                initial=start,
                desc=desc,
                unit="step",
                disable=quiet,
                dynamic_ncols=True,
            )

    @property
    def timed(self) -> bool:
        return self.limit_s > 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def reachable(self, step: int) -> int:
        """Steps the run will have done when the limit hits, at the pace so far (capped by the
        step count)."""
        done, elapsed = step - self.start, self.elapsed()
        if done <= 0 or elapsed <= 0:
            return self.total_steps
        pace = self.start + int(done / elapsed * self.limit_s)
        return min(self.total_steps, pace) if self.total_steps > 0 else pace

    def update(self, step: int, **postfix: str) -> None:
        if self.timed:
            shown = {"step": f"{step} (~{self.reachable(step)} in the limit)", **postfix}
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(min(self.limit_s, self.elapsed()) - self.bar.n)
        else:
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(step - self.bar.n)

    def out_of_time(self) -> bool:
        return self.timed and self.elapsed() >= self.limit_s

    def write(self, text: str) -> None:
        self.bar.write(text)

    def close(self) -> None:
        self.bar.close()
