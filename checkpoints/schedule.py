"""The publication schedule (Pythia's), as data: a sorted list of steps.

Step 0 (the initialisation), every power of two below `every` (log-spaced early
revisions, where the model changes fastest), every multiple of `every`, the final step,
plus any extra steps. Steps past `max_steps` are dropped.
"""

from __future__ import annotations

from collections.abc import Iterable


def publish_steps(
    max_steps: int, every: int, extra_steps: Iterable[int] = (), log_spaced: bool = True
) -> list[int]:
    """All steps in [0, max_steps] at which a revision is published, sorted."""
    if every <= 0:
        raise ValueError(f"publish.every = {every}: expected a positive integer")
    steps = {0, max_steps}
    if log_spaced:
        power = 1
        while power < every:
            steps.add(power)
            power *= 2
    steps.update(range(every, max_steps + 1, every))
    steps.update(extra_steps)
    return sorted(s for s in steps if 0 <= s <= max_steps)
