"""The study's definitions, checked by hand: bytes per token, bpb, data order, memorisation."""

import hashlib
import json
import math
import shutil

import numpy as np
import pytest
import torch
from strata.checkpoints.publish import publish_revision
from strata.model import GPT, ModelConfig
from strata.study import study
from strata.study.data import eval_set, source_group
from strata.study.evaluate import evaluate, summarise
from strata.study.memorise import score
from strata.study.norms import group_of, norm_columns
from strata.study.sample import first_steps, log_bins, mem_sample
from strata.study.tables import read_csv
from strata.tokenizer import Tokenizer, text_byte_counts, train_tokenizer
from strata.tokenizer.order import batch_window_indices
from strata.tokenizer.shards import TokenShards

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bpb_of_a_toy_case():
    ce = np.array([[1.0, 2.0], [3.0, 0.5]])
    nbytes = np.array([[1, 2], [0, 3]])  # the 0: an EOS target, charged to the text's bytes
    group = np.array([[0, 0], [1, 1]])
    data = type(
        "E", (), {"nbytes": nbytes, "group": group, "sources": ["a", "b"], "main_rows": None}
    )
    row, sources = summarise(ce, data)
    assert row["val_loss"] == pytest.approx(6.5 / 4)
    assert row["val_bpb"] == pytest.approx(6.5 / (math.log(2) * 6))
    assert sources[0] == {"source": "a", "eval_tokens": 2, "eval_bytes": 3, "loss": 1.5,
                          "bpb": pytest.approx(3 / (math.log(2) * 3))}  # fmt: skip
    assert sources[1]["bpb"] == pytest.approx(3.5 / (math.log(2) * 3))


def test_token_bytes_are_exact(tiny_dataset, tmp_path):
    tok = Tokenizer.load(tiny_dataset / "tokenizer")
    table = text_byte_counts(tok)
    assert table[[tok.eos_id, tok.bos_id, tok.pad_id]].tolist() == [0, 0, 0]
    texts = ["Grüße, 漢字 🙂 and\n\ttabs", "plain ascii", " leading space ▁ marker"] * 20
    (tmp_path / "u.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    for kind in ("bpe", "sentencepiece"):
        train_tokenizer([tmp_path / "u.jsonl"], tmp_path / kind, kind=kind, vocab_size=300)
        tok = Tokenizer.load(tmp_path / kind)
        table = text_byte_counts(tok)
        for text in texts[:3] + ["unseen: ĳ 字 🤖"]:
            ids = tok.encode(text)
            assert table[ids].sum() == len(tok.decode(ids).encode("utf-8")), (kind, text)
            if "\u2581" not in text:  # SentencePiece decodes its space marker as a space
                assert table[ids].sum() == len(text.encode("utf-8")), (kind, text)


def test_uniform_model_bpb_by_hand(tiny_dataset):
    """A model with a zero output matrix predicts uniformly: loss is exactly ln(V)."""
    torch.manual_seed(0)
    vocab = TokenShards(tiny_dataset, "val").vocab_size
    model = GPT(ModelConfig.from_preset("debug", vocab_size=vocab)).eval()
    torch.nn.init.zeros_(model.lm_head.weight)
    val = TokenShards(tiny_dataset, "val")
    table = text_byte_counts(Tokenizer.load(tiny_dataset / "tokenizer"))
    data = eval_set(val, 32, 5, table, 1)
    row, sources = evaluate(model, data, batch_size=2, vocab=vocab)
    tok = Tokenizer.load(tiny_dataset / "tokenizer")
    text = [t for t in data.targets.ravel().tolist() if t != tok.eos_id]
    nbytes = len(tok.decode(text).encode("utf-8"))  # the bytes, by decoding
    n = data.targets.size
    assert row["val_loss"] == pytest.approx(math.log(vocab), abs=1e-5)
    assert row["val_bpb"] == pytest.approx(n * math.log(vocab) / (math.log(2) * nbytes), rel=1e-6)
    assert sum(s["eval_tokens"] for s in sources) == n
    assert sum(s["eval_bytes"] for s in sources) == nbytes == row["val_bytes"]


def test_source_groups():
    assert source_group("json/decoder.py", 1) == "json"
    assert source_group("json/decoder.py", 2) == "json/decoder.py"
    assert source_group("train.jsonl:17", 1) == "train.jsonl"


def test_first_step_follows_the_data_order():
    n_windows, seed, batch = 50, 7, 4
    first = first_steps(n_windows, seed, batch)
    brute = {}
    for step in range(30):  # 2.4 epochs: later epochs never change the first step
        for w in batch_window_indices(n_windows, seed, batch, step).tolist():
            brute.setdefault(w, step)
    assert [brute[w] for w in range(n_windows)] == first.tolist()
    assert log_bins(np.array([0, 1, 2, 3, 4, 7, 8])).tolist() == [0, 1, 2, 2, 3, 3, 4]


def test_sample_is_stratified_by_first_step(tiny_dataset):
    train = TokenShards(tiny_dataset, "train")
    sample = mem_sample(train, 32, 64, 20, 0, (1337, 4))
    assert len(sample.windows) == 20 and sample.tokens.shape == (20, 64)
    assert {0, 1, 2}.issubset(set(log_bins(sample.first_step).tolist()))
    assert (sample.first_step < 4).any() and (sample.first_step >= 64).any()
    w = int(sample.windows[3])
    assert sample.tokens[3].tolist() == train.read(w * 32, 64).tolist()
    again = mem_sample(train, 32, 64, 20, 0, (1337, 4))
    assert again.windows.tolist() == sample.windows.tolist()


def test_score_counts_seen_and_unseen():
    expected = np.array([[1, 2], [3, 4], [5, 6], [7, 8]])
    generated = np.array([[1, 2], [3, 0], [5, 6], [0, 0]])
    row, detail = score(generated, expected, np.array([0, 1, 5, 9]), step=2)
    assert detail["memorised"] == [True, False, True, False]
    assert row["n_seen"] == 2 and row["n_unseen"] == 2
    assert row["mem_seen"] == 0.5 and row["mem_unseen"] == 0.5 and row["mem_all"] == 0.5
    assert row["mem_acc_seen"] == 0.75 and row["mem_acc_unseen"] == 0.5
    row, _ = score(generated, expected, np.array([0, 1, 5, 9]), step=0)
    assert row["n_seen"] == 0 and row["mem_seen"] is None and row["mem_unseen"] == 0.5


def test_norm_groups_and_relative_change():
    assert group_of("tok_embeddings.weight") == ("embed", "embed")
    assert group_of("layers.3.attn.wq.weight") == ("layers.3.attn", "attn")
    assert group_of("layers.3.mlp_norm.weight") == ("layers.3.norms", "norms")
    prev = {"layers.0.attn.w": torch.tensor([3.0, 4.0]), "norm.weight": torch.tensor([1.0])}
    now = {"layers.0.attn.w": torch.tensor([3.0, 4.0 + 5.0]), "norm.weight": torch.tensor([1.0])}
    row = norm_columns(now, prev)
    assert row["norm/layers.0.attn"] == pytest.approx(math.sqrt(90))
    assert row["dnorm/attn"] == pytest.approx(5 / 5) and row["dnorm/final_norm"] == 0.0
    assert row["dnorm/total"] == pytest.approx(5 / math.sqrt(26))
    assert norm_columns(now, None)["dnorm/total"] is None


# -- a planted memorisation test: a bigram "oracle" model on a hand-made dataset -------

V, SEQ, BATCH, SEED = 288, 32, 4, 11


def succ(t):
    return 3 + (t - 3 + 1) % (V - 3)


def _write_split(root, split, tokens, tokenizer_sha):
    path = root / f"{split}-00000.bin"
    tokens.astype("<u2").tofile(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    shard = {"file": path.name, "tokens": len(tokens), "sha256": digest}
    docs = [[i, f"{split}/part{i // 128 % 2}.txt"] for i in range(0, len(tokens), 128)]
    return {"tokens": len(tokens), "shards": [shard], "documents": docs}


def planted_dataset(root, tokenizer_dir):
    """Train stream: 128-token stretches that alternate between a cycle of `succ` (which
    the oracle reproduces) and random tokens (which it does not)."""
    rng = np.random.default_rng(0)
    parts = []
    for i in range(24):
        start = int(rng.integers(3, V))
        cycle = [start]
        for _ in range(127):
            cycle.append(succ(cycle[-1]))
        parts.append(np.array(cycle) if i % 2 == 0 else rng.integers(3, V, 128))
    shutil.copytree(tokenizer_dir, root / "tokenizer")
    sha = Tokenizer.load(root / "tokenizer").sha256()
    index = {"format_version": 1, "dtype": "uint16", "vocab_size": V, "eos_id": 0, "bos_id": 1,
             "tokenizer_sha256": sha, "splits": {
                 "train": _write_split(root, "train", np.concatenate(parts), sha),
                 "val": _write_split(root, "val", np.concatenate(parts[:4]), sha)}}  # fmt: skip
    (root / "index.json").write_text(json.dumps(index))
    return np.concatenate(parts)


def oracle_model():
    """Embedding = one-hot, blocks add nothing, lm_head maps token t to succ(t)."""
    cfg = ModelConfig(vocab_size=V, d_model=320, n_layers=1, n_heads=4, n_kv_heads=4, d_ff=32,
                      max_seq_len=128)  # fmt: skip
    model = GPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.tok_embeddings.weight[:V, :V] = torch.eye(V)
        model.norm.weight.fill_(1.0)
        for t in range(3, V):
            model.lm_head.weight[succ(t), t] = 1.0
    return model


def test_planted_memorisation_matches_the_hand_count(tiny_dataset, tmp_path):
    stream = planted_dataset(tmp_path / "data", tiny_dataset / "tokenizer")
    train = TokenShards(tmp_path / "data", "train")
    n_windows = train.n_windows(SEQ)
    model, tok = oracle_model(), Tokenizer.load(tiny_dataset / "tokenizer")
    data = {"dataset": str(tmp_path / "data"), "seed": SEED, "seq_len": SEQ,
            "global_batch_size": BATCH, "n_windows": n_windows}  # fmt: skip
    for step in (0, 2, 4, 8, 16):
        info = {"tokens": step * BATCH * SEQ, "data": data}
        publish_revision(tmp_path / "ckpts", step, model, model.config, tok, info)
    report = study(tmp_path / "ckpts", mem_samples=24, eval_windows=4, quiet=True)
    rows = read_csv(report.parent / "metrics.csv")
    record = json.loads((report.parent / "cache" / "step16.json").read_text())
    windows = record["memorisation"]["windows"]
    first = {}  # the step that first trains on each window, by brute force
    for step in range(n_windows // BATCH + 1):
        for w in batch_window_indices(n_windows, SEED, BATCH, step).tolist():
            first.setdefault(w, step)

    def memorised(w):  # the oracle reproduces the continuation iff it follows succ
        span = stream[w * SEQ : w * SEQ + 64]
        return all(span[k + 1] == succ(span[k]) for k in range(31, 63))

    hits = {w: memorised(w) for w in windows}
    assert 0 < sum(hits.values()) < len(hits)  # both kinds were sampled
    for row in rows:
        step = int(row["step"])
        seen = [w for w in windows if first[w] < step]
        unseen = [w for w in windows if first[w] >= step]
        assert int(row["n_seen"]) == len(seen) and int(row["n_unseen"]) == len(unseen)
        if seen:
            assert float(row["mem_seen"]) == pytest.approx(np.mean([hits[w] for w in seen]))
        assert float(row["mem_unseen"]) == pytest.approx(np.mean([hits[w] for w in unseen]))
    assert int(rows[0]["n_seen"]) == 0 and int(rows[-1]["n_seen"]) > 0
    with torch.no_grad():  # sample_loss: each window's mean cross-entropy, by hand
        loss = {}
        for w in windows:
            span = torch.as_tensor(stream[w * SEQ : w * SEQ + 64], dtype=torch.long)
            logits = model(span[None, :-1])[0, :, :V]
            loss[w] = torch.nn.functional.cross_entropy(logits, span[1:]).item()
    for row in rows:
        step = int(row["step"])
        seen = [loss[w] for w in windows if first[w] < step]
        unseen = [loss[w] for w in windows if first[w] >= step]
        assert float(row["sample_loss_all"]) == pytest.approx(np.mean(list(loss.values())))
        if seen:
            assert float(row["sample_loss_seen"]) == pytest.approx(np.mean(seen), rel=1e-5)
        else:
            assert row["sample_loss_seen"] == ""
        assert float(row["sample_loss_unseen"]) == pytest.approx(np.mean(unseen), rel=1e-5)
