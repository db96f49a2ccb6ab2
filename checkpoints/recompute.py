"""`strata verify --recompute`: check what the weights mean, not only what the files say.

Design choices:
- Each revision's recorded `val_loss` is evaluated again on the windows it was measured
  on: `train.eval_windows` windows of `data.seq_len` tokens from the dataset's val split
  (`tokenizer.order.validation_windows`, the trainer's rule), read from the run config
  and data cursor that every `strata.json` records. The loss is the mean cross-entropy
  over every predicted token, fp32 logits over the dataset's vocabulary, sums in float64.
- "Beyond fp noise" depends on how the run measured it: `eval_dtype` in `strata.json`.
  fp32 revisions must agree to a relative 1e-4 (the trainer's fused chunked loss and
  this plain one differ by about 1e-7); bf16, or a revision that does not record its
  dtype, to 2e-2. `--tolerance` overrides both.
- Recomputed losses should fall along the chain: a revision whose loss is more than 5%
  above the best earlier one is reported (`loss-rise`). Real runs can spike; the
  report says by how much, so a reader can judge.
- Two revisions with identical weights: the plain check blames the later one; here both
  are named with the evidence (their recorded losses against the recomputed one, and
  the neighbours' losses), and the one whose record does not fit is blamed. In Pythia's
  case the earlier revisions were the wrong ones.
- Only `checkpoints/`, `run/`, `model/` and `tokenizer/` are used: no trainer, no GPU
  needed (`device` picks one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from strata.checkpoints.load import load
from strata.run import RevisionMeta
from strata.run.config import recorded_eval_windows
from strata.run.dataset import dataset_fingerprint, resolve_dataset
from strata.tokenizer import TokenShards, validation_windows

FP32_TOLERANCE = 1e-4
LOOSE_TOLERANCE = 2e-2  # bf16, or a revision that does not record how it measured
RISE = 0.05
BATCH = 16


@dataclass
class Measured:
    name: str
    step: int
    recorded: float | None
    loss: float | None
    tolerance: float


@torch.no_grad()
def mean_loss(model: torch.nn.Module, rows: np.ndarray, vocab: int) -> float:
    """Mean cross-entropy over every predicted token of `rows` (N, T + 1), in float64."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(rows), BATCH):
        chunk = torch.from_numpy(rows[start : start + BATCH]).to(device)
        logits = model(chunk[:, :-1])[..., :vocab].float()  # (B, T, V)
        ce = F.cross_entropy(logits.flatten(0, 1), chunk[:, 1:].flatten(), reduction="sum")
        total, count = total + float(ce.double()), count + chunk[:, 1:].numel()
    return total / count


class Windows:
    """The recorded validation windows of each (dataset, seq_len, count), built once."""

    def __init__(self, run_root: Path | None) -> None:
        self.run_root, self.cache = run_root, {}

    def rows(self, meta: RevisionMeta) -> tuple[np.ndarray, int] | str:
        """(rows, vocab) for `meta`'s recorded windows, or why they cannot be rebuilt."""
        data, count = meta.data, recorded_eval_windows(meta.run)
        if data is None or data.dataset is None or data.seq_len is None or count is None:
            return "strata.json records no dataset, seq_len or train.eval_windows"
        key = (data.dataset, data.seq_len, count)
        if key not in self.cache:
            out_dir = (meta.run or {}).get("run", {}).get("out_dir", "runs")
            dataset = resolve_dataset(data.dataset, self.run_root, out_dir)
            sources = meta.extra.get("sources")  # a mixture: the first source's index
            first = sources[0] if isinstance(sources, list) and sources else None
            expected = first.get("fingerprint") if isinstance(first, dict) else None
            expected = expected if sources else data.dataset_fingerprint
            if expected and dataset_fingerprint(dataset) != expected:
                return f"dataset {dataset} is not the one the run recorded (fingerprint)"
            val = TokenShards(dataset, "val")
            picks = validation_windows(val.n_windows(data.seq_len), count)
            rows = np.stack([val.window(int(w), data.seq_len) for w in picks])
            self.cache[key] = (rows, int(val.index["vocab_size"]))
        return self.cache[key]


def tolerance_of(meta: RevisionMeta, override: float | None) -> float:
    if override is not None:
        return override
    return FP32_TOLERANCE if meta.eval_dtype == "fp32" else LOOSE_TOLERANCE


def off(m: Measured) -> bool:
    """Whether the recomputed loss disagrees with the recorded one beyond the tolerance."""
    if m.recorded is None or m.loss is None:
        return False
    return abs(m.loss - m.recorded) > m.tolerance * max(1.0, abs(m.recorded))


def measure(
    ckpt: Path, run_root: Path | None, metas: dict[str, RevisionMeta], order: list[str],
    add, device: str = "cpu", tolerance: float | None = None, progress: bool = False,
) -> dict[str, Measured]:  # fmt: skip
    """Recompute every revision's val_loss; `add(kind, path, detail)` reports problems."""
    from tqdm import tqdm

    windows, out = Windows(run_root), {}
    for name in tqdm(order, desc="recompute", unit="rev", disable=not progress, leave=False):
        meta = metas[name]
        m = Measured(name, meta.step or 0, meta.val_loss, None, tolerance_of(meta, tolerance))
        out[name] = m
        try:
            got = windows.rows(meta)
        except (FileNotFoundError, ValueError) as err:
            got = str(err)
        if isinstance(got, str):
            add("recompute-skipped", ckpt / name, got)
            continue
        try:
            model = load(ckpt / name, device=device).eval()
        except (ValueError, FileNotFoundError) as err:
            add("recompute-skipped", ckpt / name, f"cannot load ({err})")
            continue
        m.loss = mean_loss(model, *got)
        if off(m):
            add("val-loss-mismatch", ckpt / name / "strata.json",
                f"recorded val_loss {m.recorded:.6f}, recomputed {m.loss:.6f} on the recorded "
                f"{len(got[0])} windows (tolerance {m.tolerance:g} relative)")  # fmt: skip
    return out


def check_falling(ckpt: Path, measured: list[Measured], add) -> None:
    """A recomputed loss more than RISE above the best earlier one is reported."""
    best: Measured | None = None
    for m in (m for m in measured if m.loss is not None):
        if best is not None and m.loss > best.loss * (1 + RISE):
            add("loss-rise", ckpt / m.name,
                f"recomputed val_loss {m.loss:.4f} is {m.loss / best.loss - 1:.0%} above "
                f"{best.name}'s {best.loss:.4f}; losses should fall along the chain")  # fmt: skip
        if best is None or m.loss < best.loss:
            best = m


def judge_identical(
    ckpt: Path, pair: tuple[str, str], measured: dict[str, Measured], order: list[str], add
) -> None:
    """Name both revisions of an identical pair and blame the one whose record misfits."""
    a, b = (measured.get(n) for n in pair)
    loss = next((m.loss for m in (a, b) if m is not None and m.loss is not None), None)
    facts = [f"{m.name} records {m.recorded}" for m in (a, b) if m is not None]
    detail = f"{pair[0]} and {pair[1]} hold the same weights"
    if loss is None:
        add("identical-weights", ckpt / pair[1], f"{detail} (not recomputed)")
        return
    detail += f" (val_loss {loss:.6f}); " + ", ".join(facts)
    wrong = [m for m in (a, b) if m is not None and off(m)]
    if len(wrong) == 1:
        culprit = wrong[0].name
        detail += f": {culprit}'s record does not fit its weights"
    else:
        culprit = _misfit_by_neighbours(pair, loss, measured, order)
        detail += f"; by its neighbours' losses, {culprit} is the misplaced one"
    add("identical-weights", ckpt / culprit, detail)


def _misfit_by_neighbours(
    pair: tuple[str, str], loss: float, measured: dict[str, Measured], order: list[str]
) -> str:
    """The revision of `pair` where `loss` fits the falling chain worse: how far it lies
    outside [the next revision's loss, the previous one's] (the other of the pair left
    out). A tie (both fit) blames the later one, as the plain check does."""

    def misfit(name: str) -> float:
        i = order.index(name)
        known = [n for n in order if n not in pair and measured[n].loss is not None]
        before = [measured[n].loss for n in known if order.index(n) < i]
        after = [measured[n].loss for n in known if order.index(n) > i]
        high = before[-1] if before else float("inf")
        low = after[0] if after else float("-inf")
        return max(0.0, loss - high, low - loss)

    first, second = misfit(pair[0]), misfit(pair[1])
    return pair[0] if first > second else pair[1]
