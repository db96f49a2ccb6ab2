"""strata.json and the manifest read files written under the older `train_loss` name."""

import json

from strata.run import Manifest, RevisionMeta


def test_train_loss_is_read_as_last_batch_loss(tmp_path):
    meta = RevisionMeta.from_dict({"step": 4, "revision": "step4", "train_loss": 5.5}, "x")
    assert meta.last_batch_loss == 5.5 and "train_loss" not in meta.to_dict()
    assert meta.to_dict()["last_batch_loss"] == 5.5 and not meta.extra
    both = RevisionMeta.from_dict({"step": 4, "last_batch_loss": 5.0, "train_loss": 9.0}, "x")
    assert both.last_batch_loss == 5.0  # the current name wins
    entry = {"revision": "step4", "step": 4, "tokens": 64, "train_loss": 5.5, "val_loss": 5.9}
    (tmp_path / "manifest.json").write_text(json.dumps({"revisions": [entry]}))
    entry = Manifest.read(tmp_path).revisions[0]
    assert (entry.last_batch_loss, entry.val_loss) == (5.5, 5.9)
