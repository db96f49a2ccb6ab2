"""The stdlib corpus and reading documents from .txt / .jsonl(.gz/.zst) / .parquet."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest
from strata.tokenizer import build_stdlib_corpus, iter_documents, stdlib_files
from strata.tokenizer import corpus as corpus_module


def test_stdlib_files_sorted_without_third_party() -> None:
    files = stdlib_files()
    assert len(files) > 100
    rels = [rel for _, rel in files]
    assert rels == sorted(rels) and len(set(rels)) == len(rels)
    for path, rel in files[:: max(1, len(files) // 50)]:
        assert path.is_absolute() and path.is_file() and path.as_posix().endswith(rel)
    assert all(rel.endswith(".py") for rel in rels)
    assert not any({"site-packages", "dist-packages"} & set(rel.split("/")) for rel in rels)


def test_stdlib_files_excludes_third_party_and_venvs(tmp_path: Path, monkeypatch) -> None:
    for rel in [
        "b.py",
        "a/x.py",
        "site-packages/s.py",
        "a/dist-packages/d.py",
        "env/lib/v.py",
        "notes.txt",
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("pass\n")
    (tmp_path / "env" / "pyvenv.cfg").write_text("home = /usr\n")
    monkeypatch.setattr(corpus_module.sysconfig, "get_paths", lambda: {"stdlib": str(tmp_path)})
    assert [rel for _, rel in stdlib_files()] == ["a/x.py", "b.py"]


@pytest.fixture()
def fake_stdlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Path, str]]:
    root = tmp_path / "lib"
    files = []
    for i in range(7):
        path = root / f"pkg{i % 2}" / f"mod{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"# module {i}\r\ndef f():\n\treturn {i}  # ünï\n".encode())
        files.append((path, path.relative_to(root).as_posix()))
    bad = root / "bad.py"
    bad.write_bytes(b"# latin-1: \xe9\n")
    files.append((bad, "bad.py"))
    files.sort(key=lambda item: item[1])
    monkeypatch.setattr(corpus_module, "stdlib_files", lambda: files)
    return files


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_build_stdlib_corpus_split_and_skip(fake_stdlib, tmp_path: Path) -> None:
    stats = build_stdlib_corpus(tmp_path / "out", val_every=3)
    assert stats == {
        "files": 8,
        "train_files": 5,
        "val_files": 2,
        "skipped": 1,
        "bytes": sum(len(p.read_bytes()) for p, r in fake_stdlib if r != "bad.py"),
    }
    train, val = read_jsonl(tmp_path / "out/train.jsonl"), read_jsonl(tmp_path / "out/val.jsonl")
    expected_val = [rel for i, (_, rel) in enumerate(fake_stdlib) if i % 3 == 2 and rel != "bad.py"]
    assert [d["source"] for d in val] == expected_val
    assert "bad.py" not in {d["source"] for d in train + val}
    by_source = {rel: path for path, rel in fake_stdlib}
    for doc in train + val:  # text is the file's exact content, \r\n included
        assert doc["text"].encode() == by_source[doc["source"]].read_bytes()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["train.jsonl", "val.jsonl"]


def test_build_stdlib_corpus_is_deterministic(fake_stdlib, tmp_path: Path) -> None:
    build_stdlib_corpus(tmp_path / "a")
    build_stdlib_corpus(tmp_path / "b")
    for name in ("train.jsonl", "val.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_build_stdlib_corpus_rejects_bad_val_every(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="val_every"):
        build_stdlib_corpus(tmp_path, val_every=1)


# -- iter_documents ------------------------------------------------------------------


def test_txt_is_one_document(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"line one\r\n\n  indented\tx\n")
    assert list(iter_documents(tmp_path / "a.txt")) == [("line one\r\n\n  indented\tx\n", "a.txt")]


def test_jsonl_sources_and_blank_lines(tmp_path: Path) -> None:
    lines = [json.dumps({"text": "a", "source": "src-a"}), "", json.dumps({"text": "b\n"}), "  "]
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n")
    assert list(iter_documents(tmp_path / "c.jsonl")) == [("a", "src-a"), ("b\n", "c.jsonl:3")]


def test_jsonl_gz_and_text_field(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "d.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"content": "ünï\u2028code"}) + "\n")
    docs = list(iter_documents([tmp_path / "d.jsonl.gz"], text_field="content"))
    assert docs == [("ünï\u2028code", "d.jsonl.gz:1")]


def test_directory_expands_sorted_supported_files(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("B")
    (tmp_path / "a.txt").write_text("A")
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "C"}) + "\n")
    (tmp_path / "notes.md").write_text("ignored inside a directory")
    assert [t for t, _ in iter_documents(tmp_path)] == ["A", "C", "B"]


def test_errors_name_file_line_and_field(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"x": 1}))
    with pytest.raises(ValueError, match=r"bad.jsonl line 2: missing text field 'text'"):
        list(iter_documents(tmp_path / "bad.jsonl"))
    (tmp_path / "num.jsonl").write_text(json.dumps({"text": 3}))
    with pytest.raises(ValueError, match="num.jsonl line 1: field 'text' must be a string"):
        list(iter_documents(tmp_path / "num.jsonl"))
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match="broken.jsonl line 1: invalid JSON"):
        list(iter_documents(tmp_path / "broken.jsonl"))
    (tmp_path / "data.csv").write_text("a,b")
    with pytest.raises(ValueError, match="data.csv: unsupported input file type"):
        list(iter_documents(tmp_path / "data.csv"))
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        list(iter_documents(tmp_path / "missing.jsonl"))
    (tmp_path / "latin.txt").write_bytes(b"\xe9")
    with pytest.raises(ValueError, match="latin.txt: not valid UTF-8"):
        list(iter_documents(tmp_path / "latin.txt"))


def test_empty_inputs_error_names_paths(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no documents found.*empty.jsonl"):
        list(iter_documents([tmp_path / "empty.jsonl"]))
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match="no documents found"):
        list(iter_documents(tmp_path / "d"))


@pytest.mark.parametrize(
    ("name", "module"), [("x.jsonl.zst", "zstandard"), ("x.parquet", "pyarrow")]
)
def test_optional_dependency_message(name, module, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / name).write_bytes(b"")
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    if module == "pyarrow":
        monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=rf"{module}.*pip install 'strata\[data\]'"):
        list(iter_documents(tmp_path / name))


def test_jsonl_zst(tmp_path: Path) -> None:
    zstandard = pytest.importorskip("zstandard")
    data = json.dumps({"text": "z1"}) + "\n" + json.dumps({"text": "z2", "source": "s"}) + "\n"
    (tmp_path / "x.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data.encode()))
    assert list(iter_documents(tmp_path / "x.jsonl.zst")) == [("z1", "x.jsonl.zst:1"), ("z2", "s")]


def test_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"text": ["p0", "p1"]}), tmp_path / "x.parquet")
    assert list(iter_documents(tmp_path / "x.parquet")) == [
        ("p0", "x.parquet:0"),
        ("p1", "x.parquet:1"),
    ]
    with pytest.raises(ValueError, match="x.parquet: missing text column 'body'"):
        list(iter_documents(tmp_path / "x.parquet", text_field="body"))
