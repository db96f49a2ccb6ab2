"""The data ledger (run/ledger.py): round trip over chunks, byte-identical resume, digests
naming the chunk, positions checked later, scans against a naive count, a malformed
index.json in one line, and appends that skip or repeat a step refused."""

import hashlib
import json
import os
import re
from collections import Counter

import numpy as np
import pytest
from strata.run.ledger import COLUMNS, INDEX, Header, Ledger
from strata.run.ledger_write import LedgerWriter
from strata.tokenizer.mixture import Mixture

B, SPC = 4, 3  # rows per step, steps per chunk
NAMES, N_DOCS, N_WIN = ("web", "code"), (3, 2), (7, 5)
MIX = Mixture((2, 1), N_WIN, seed=0)
MAX_EPOCH, MAX_SPAN = 40, 1


def mixture_rows(step):
    """(sources, documents, spans, windows, epochs) of global batch `step`, each (B,)
    int64: the real mixture order, each document holding a run of consecutive windows,
    a window reaching into the next window's document."""
    b = MIX.batch(B, step)
    n_docs, n_win = np.asarray(N_DOCS)[b.sources], np.asarray(N_WIN)[b.sources]
    docs = b.windows * n_docs // n_win
    last = np.minimum((b.windows + 1) * n_docs // n_win, n_docs - 1)
    return b.sources, docs, last - docs, b.windows, b.epochs


def random_rows(rng):
    sources = rng.integers(0, len(NAMES), B)
    docs = rng.integers(0, np.asarray(N_DOCS)[sources])
    spans = rng.integers(0, np.minimum(np.asarray(N_DOCS)[sources] - docs, MAX_SPAN + 1))
    windows = rng.integers(0, np.asarray(N_WIN)[sources])
    return sources, docs, spans, windows, rng.integers(0, MAX_EPOCH + 1, B)


def open_writer(folder, start_step=0, **changes):
    args = dict(batch_size=B, source_names=NAMES, n_documents=N_DOCS, n_windows=N_WIN,
                max_epoch=MAX_EPOCH, max_span=MAX_SPAN, steps_per_chunk=SPC,
                start_step=start_step)  # fmt: skip
    return LedgerWriter.open(folder, **(args | changes))


def record(writer, start, stop, rows=mixture_rows):
    for step in range(start, stop):
        writer.append(step, *rows(step))
    writer.flush()


def files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_round_trip_over_several_chunks(tmp_path):
    rng, appended = np.random.default_rng(0), []
    writer = open_writer(tmp_path)
    for step in range(8):
        appended.append(random_rows(rng))
        writer.append(step, *appended[-1])
    assert Ledger.read(tmp_path).steps == 6  # two full chunks written; 2 steps not flushed
    writer.flush()
    ledger = Ledger.read(tmp_path)
    assert ledger.steps == 8 and [c.file for c in ledger.chunks] == [
        "chunk-000000-3.bin", "chunk-000001-3.bin", "chunk-000002-2.bin"]  # fmt: skip
    assert [d.name for d in ledger.header.dtypes] == ["uint8"] * 5 + ["bool"]
    for step, columns in enumerate(appended):
        rows, want = ledger.rows(step), (*columns, columns[-1] > 0)
        for name, column in zip(COLUMNS, want, strict=True):
            assert np.array_equal(rows[name], column), (step, name)
    scanned = np.concatenate([cols["window"] for _, cols in ledger.iter_chunks()])  # (8, B)
    assert np.array_equal(scanned, np.stack([a[3] for a in appended]))
    assert ledger.verify() == []
    with pytest.raises(ValueError, match="step 8 not recorded"):
        ledger.rows(8)


def test_file_layout_is_the_documented_one(tmp_path):
    """A chunk file is each column in turn, little-endian, step-major; its sha256 is the
    file's and index.json records it."""
    record(open_writer(tmp_path), 0, 2)
    index = json.loads((tmp_path / INDEX).read_text())
    data = (tmp_path / "chunk-000000-2.bin").read_bytes()
    rows = [mixture_rows(s) for s in range(2)]
    want = b"".join(np.stack([r[c] for r in rows]).astype("<u1").tobytes() for c in range(5))
    want += np.stack([r[4] > 0 for r in rows]).tobytes()
    assert data == want and index["chunks"][0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert index["steps"] == 2 and index["batch_size"] == B and index["steps_per_chunk"] == SPC
    assert [c["name"] for c in index["columns"]] == list(COLUMNS)


def test_dtypes_follow_the_counts():
    def dtypes(**kw):
        args = dict(batch_size=1, names=["a"], n_documents=[2], n_windows=[2], max_epoch=1,
                    spc=1, max_span=1)  # fmt: skip
        return [d.name for d in Header.create(**(args | kw)).dtypes]

    assert dtypes() == ["uint8"] * 5 + ["bool"]
    assert dtypes(n_documents=[2**32], n_windows=[300], max_epoch=256)[1:5] == [
        "uint32", "uint8", "uint16", "uint16"]  # fmt: skip
    assert dtypes(n_documents=[2**32 + 1])[1] == "uint64"
    assert dtypes(n_documents=[300], max_span=2048)[2] == "uint16"
    assert dtypes(n_documents=[3], max_span=2048)[2] == "uint8"  # span < documents
    assert dtypes(names=[str(i) for i in range(257)], n_documents=[2] * 257,
                  n_windows=[2] * 257)[0] == "uint16"  # fmt: skip


def test_the_size_in_the_docstring():
    import strata.run.ledger as ledger

    pythia = Header.create(1024, ["pile"], [2**31], [2**31], 3, 1000, 2048)
    per_1000 = 1000 * 1024 * sum(d.itemsize for d in pythia.dtypes)
    assert per_1000 == 13_312_000 and "13,312,000 bytes" in ledger.__doc__
    assert 143 * per_1000 == 1_903_616_000 and "1.9 GB" in ledger.__doc__


def test_resume_mid_chunk_records_the_same_bytes(tmp_path):
    record(open_writer(tmp_path), 0, 8)
    before = files(tmp_path)
    writer = open_writer(tmp_path, start_step=4)  # inside chunk 1; chunk 2 dropped
    ledger = Ledger.read(tmp_path)
    assert ledger.steps == 4 and set(files(tmp_path)) == {
        INDEX, "chunk-000000-3.bin", "chunk-000001-1.bin"}  # fmt: skip
    assert ledger.verify() == []
    record(writer, 4, 8)
    assert files(tmp_path) == before  # chunks and index.json, byte for byte
    record(open_writer(tmp_path, start_step=8), 8, 9)  # resume at the end: continues
    assert Ledger.read(tmp_path).steps == 9
    record(open_writer(tmp_path, start_step=0), 0, 1)  # from scratch: all dropped
    assert set(files(tmp_path)) == {INDEX, "chunk-000000-1.bin"}


def test_resume_is_refused_past_the_end_or_for_another_shape(tmp_path):
    record(open_writer(tmp_path), 0, 4)
    with pytest.raises(ValueError, match="holds 4 steps, not 6"):
        open_writer(tmp_path, start_step=6)
    with pytest.raises(ValueError, match="batch_size"):
        open_writer(tmp_path, batch_size=8)
    with pytest.raises(ValueError, match="sources"):
        open_writer(tmp_path, n_windows=(7, 6))
    with pytest.raises(ValueError, match="no ledger|holds 0 steps"):
        open_writer(tmp_path / "new", start_step=3)
    open_writer(tmp_path, start_step=4, max_epoch=41)  # same dtypes: fine


def test_a_crash_leaves_a_readable_ledger_and_open_cleans_up(tmp_path):
    record(open_writer(tmp_path), 0, 4)
    before = files(tmp_path)
    (tmp_path / ".chunk-000001-2.bin.tmp-99999").write_bytes(b"half")  # killed mid-write
    (tmp_path / "chunk-000001-2.bin").write_bytes(b"renamed, index not yet replaced")
    (tmp_path / ".index.json.tmp-99999").write_text("{")
    assert Ledger.read(tmp_path).verify() == []  # the index names only complete files
    open_writer(tmp_path, start_step=4)
    assert files(tmp_path) == before


def test_verify_names_a_changed_or_missing_chunk(tmp_path):
    record(open_writer(tmp_path), 0, 8)
    path = tmp_path / "chunk-000001-3.bin"
    data = bytearray(path.read_bytes())
    data[5] ^= 1
    path.write_bytes(bytes(data))
    problems = Ledger.read(tmp_path).verify()
    assert len(problems) == 1 and "chunk-000001-3.bin: sha256" in problems[0]
    path.unlink()
    problems = Ledger.read(tmp_path).verify()
    assert len(problems) == 1 and "chunk-000001-3.bin" in problems[0] and "missing" in problems[0]
    path.write_bytes(bytes(data[:-1]))
    assert "bytes, expected" in Ledger.read(tmp_path).verify()[0]
    path.unlink()
    os.symlink(tmp_path / "chunk-000000-3.bin", path)
    assert "symbolic link" in Ledger.read(tmp_path).verify()[0]


def test_a_mid_chunk_position_is_checked_after_more_steps(tmp_path):
    writer = open_writer(tmp_path)
    record(writer, 0, 5)
    position = json.loads(json.dumps(writer.position(5)))  # as strata.json stores it
    assert position["steps"] == 5 and len(position["chunks"]) == 2
    assert position == Ledger.read(tmp_path).position(5)
    record(writer, 5, 11)
    ledger = Ledger.read(tmp_path)
    assert ledger.check_position(position) == [] and ledger.position(5) == position
    assert position["chunks"][1] != ledger.chunks[1].sha256  # a prefix of the full chunk
    assert ledger.check_position(writer.position(6)) == []  # a boundary: the full digest
    assert ledger.position(0)["chunks"] == [] and ledger.check_position(ledger.position(0)) == []
    wrong = position | {"chunks": [position["chunks"][0], "0" * 64]}
    assert "chunk 1" in ledger.check_position(wrong)[0]
    assert ledger.check_position(position | {"steps": 4}) != []
    assert ledger.check_position(position | {"steps": 12}) != []
    assert ledger.check_position({"chunks": []}) != [] and ledger.check_position([]) != []
    record(writer, 11, 12)
    writer.append(12, *mixture_rows(12))
    with pytest.raises(ValueError, match="position 13: 12 steps recorded"):
        writer.position(13)  # not flushed yet
    record(open_writer(tmp_path, start_step=3), 3, 9)  # resumed, recorded again
    assert Ledger.read(tmp_path).check_position(position) == []


def naive(rows_by_step, until):
    """(steps_with[(s, d)], counts (until, K), histogram per source) from every row."""
    steps_with, epochs_of = {}, {}
    counts = np.zeros((until, len(NAMES)), np.int64)
    for step, (sources, docs, spans, _, epochs) in enumerate(rows_by_step[:until]):
        for s, d, n, e in zip(*(a.tolist() for a in (sources, docs, spans, epochs)), strict=True):
            for doc in range(d, d + n + 1):  # every document the row overlaps
                steps_with.setdefault((s, doc), set()).add(step)
                epochs_of.setdefault((s, doc), set()).add(e)
            counts[step, s] += 1
    hist = [dict(Counter(len(e) for (s, _), e in epochs_of.items() if s == k)) for k in (0, 1)]
    return steps_with, counts, hist


def test_scans_agree_with_a_naive_count(tmp_path):
    steps = 13
    record(open_writer(tmp_path), 0, steps)
    ledger, rows = Ledger.read(tmp_path), [mixture_rows(s) for s in range(steps)]
    steps_with, _, _ = naive(rows, steps)
    for s in (0, 1):
        for d in range(N_DOCS[s]):
            want = sorted(steps_with.get((s, d), ()))
            assert sorted(set(ledger.rows_with(s, document=d)[:, 0].tolist())) == want
            assert sorted(set(ledger.rows_with(NAMES[s], document=d)[:, 0].tolist())) == want
    hits = ledger.rows_with("code", windows=np.array([1, 3]))  # (n, 4) step, row, window, epoch
    naive_hits = [(t, j, int(r[3][j]), int(r[4][j])) for t, r in enumerate(rows)
                  for j in range(B) if r[0][j] == 1 and r[3][j] in (1, 3)]  # fmt: skip
    assert [tuple(h) for h in hits.tolist()] == naive_hits and naive_hits
    for until in (0, 1, 5, steps):
        _, counts, hist = naive(rows, until)
        assert np.array_equal(ledger.counts_per_source(until), counts)
        for s in (0, 1):
            assert ledger.seen_histogram(NAMES[s], until) == hist[s], (s, until)
    assert max(ledger.seen_histogram("web")) > 1  # the mixture passed several epochs
    with pytest.raises(ValueError, match="no source 'books'"):
        ledger.seen_histogram("books")
    with pytest.raises(ValueError, match="until_step 14 outside"):
        ledger.counts_per_source(14)


def test_append_refuses_a_gap_a_repeat_and_bad_rows(tmp_path):
    writer = open_writer(tmp_path)
    record(writer, 0, 3)
    with pytest.raises(ValueError, match="expected step 3 .a gap"):
        writer.append(5, *mixture_rows(5))
    with pytest.raises(ValueError, match="expected step 3 .a repeat"):
        writer.append(2, *mixture_rows(2))
    sources, docs, spans, windows, epochs = mixture_rows(3)
    with pytest.raises(ValueError, match=r"document: expected \(4,\) integers"):
        writer.append(3, sources, docs[:2], spans, windows, epochs)
    with pytest.raises(ValueError, match="integers >= 0"):
        writer.append(3, sources, docs.astype(float), spans, windows, epochs)
    bad = np.where(sources == 1, 2, docs)  # source 1 has 2 documents
    with pytest.raises(ValueError, match="document 2 is not below 2"):
        writer.append(3, sources, bad, spans, windows, epochs)
    with pytest.raises(ValueError, match="source 2 is not below 2"):
        writer.append(3, sources + 2, docs, spans, windows, epochs)
    with pytest.raises(ValueError, match="epoch 41 is not below 41"):
        writer.append(3, sources, docs, spans, windows, np.full(B, MAX_EPOCH + 1))
    with pytest.raises(ValueError, match="span 2 is not below 2"):
        writer.append(3, sources, docs, np.full(B, 2), windows, epochs)
    with pytest.raises(ValueError, match="document \\+ span 3 is not below 3"):
        writer.append(3, sources * 0, np.full(B, 2), np.ones(B, int), windows, epochs)
    writer.append(3, sources, docs, spans, windows, epochs)  # nothing was recorded by a refusal
    assert writer.steps == 4


def _break(index, key, value):
    """Set (or with value None, delete) the dotted `key` of `index`, e.g. chunks.0.file."""
    *parents, last = key.split(".")
    obj = index
    for part in parents:
        obj = obj[int(part)] if isinstance(obj, list) else obj[part]
    if value is None:
        del obj[last]
    else:
        obj[int(last) if isinstance(obj, list) else last] = value


@pytest.mark.parametrize(
    "key, value, named",
    [
        ("batch_size", None, "'batch_size' is missing"),
        ("steps_per_chunk", "3", "'steps_per_chunk' = '3': expected an integer"),
        ("chunks.0.file", "../x", "'chunks[0].file' = '../x'"),
        ("chunks.1.file", "/etc/passwd", "'chunks[1].file' = '/etc/passwd'"),
        ("chunks.1.sha256", 5, "'chunks[1].sha256' = 5"),
        ("chunks.0.first_step", 1, "'chunks[0].steps'"),
        ("chunks.0.steps", 2, "'chunks[0].file'"),
        ("sources.1.n_windows", 0, "'sources[1].n_windows' = 0"),
        ("columns.1.dtype", "float32", "'columns' dtypes"),
        ("columns.0.name", "src", "'columns' names"),
        ("steps", 9, "'steps' = 9"),
        ("chunks", {}, "'chunks' = {}: expected a list"),
        ("format_version", 1, "'format_version' = 1: expected 2"),
    ],
)
def test_a_malformed_index_is_one_line_naming_file_and_key(tmp_path, key, value, named):
    record(open_writer(tmp_path), 0, 5)
    index = json.loads((tmp_path / INDEX).read_text())
    _break(index, key, value)
    (tmp_path / INDEX).write_text(json.dumps(index))
    with pytest.raises(ValueError) as err:
        Ledger.read(tmp_path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(tmp_path / INDEX))
    assert re.search(re.escape(named), message), message
