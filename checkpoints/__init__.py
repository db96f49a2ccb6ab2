"""Checkpoints: resume (DCP), publication schedule, published revisions, loading.

`from strata.checkpoints import load`; `load("runs/quickstart/checkpoints/step256")` returns
our `GPT` with that revision's weights.
"""

from strata.checkpoints.load import load, verify_revision
from strata.checkpoints.schedule import publish_steps

__all__ = ["load", "publish_steps", "verify_revision"]
