"""`strata generate`: out-of-range sampling options are one `strata: error:` line naming
the option, and a sharded Hugging Face folder (`model-0000i-of-0000n.safetensors` plus
`model.safetensors.index.json`) generates what the same weights in one file generate."""

import json
import shutil
from pathlib import Path

import pytest
from strata.checkpoints.publish import write_revision
from strata.model import GPT, ModelConfig
from strata.tokenizer import Tokenizer

from strata.cli import main
from tests.checkpoints.test_untrusted import snapshot

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
PROMPT = "def function_1(x):\n    value_0"


@pytest.fixture(scope="module")
def revision(tiny_dataset, tmp_path_factory) -> Path:
    """A published revision of a random debug model, with the tiny dataset's tokenizer."""
    tok = Tokenizer.load(tiny_dataset.parent / "tokenizer")
    model = GPT(ModelConfig.from_preset("debug", vocab_size=tok.vocab_size))
    model.init_weights(seed=0)
    out = tmp_path_factory.mktemp("gen") / "step0"
    write_revision(out, model, model.config, tok, {"step": 0})
    return out


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """`strata ARGV` in this process: exit status, stdout, stderr (of this call only)."""
    capsys.readouterr()  # drop what came before (transformers' progress bars)
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


BAD = [
    (["--temperature", "nan"], "--temperature = nan: expected a finite number >= 0 (0 = greedy)"),
    (["--temperature", "-1"], "--temperature = -1.0: expected a finite number >= 0 (0 = greedy)"),
    (["--temperature", "inf"], "--temperature = inf: expected a finite number >= 0 (0 = greedy)"),
    (["--top-p", "0"], "--top-p = 0.0: expected a number in (0, 1] (1 = off)"),
    (["--top-p", "1.5"], "--top-p = 1.5: expected a number in (0, 1] (1 = off)"),
    (["--top-p", "nan"], "--top-p = nan: expected a number in (0, 1] (1 = off)"),
    (["--top-k", "-3"], "--top-k = -3: expected an integer >= 0 (0 = no top-k filter)"),
    (["--max-new-tokens", "-5"], "--max-new-tokens = -5: expected an integer >= 0"),
    (["--seed", "-1"], "--seed = -1: expected an integer in [0, 2**64)"),
    (["--seed", str(2**64)], f"--seed = {2**64}: expected an integer in [0, 2**64)"),
]


@pytest.mark.parametrize("options, message", BAD)
def test_bad_sampling_option_is_one_line(revision, capsys, options, message):
    code, out, err = run_cli(capsys, "generate", str(revision), "--prompt", "x", *options)
    assert (code, out) == (2, "")
    assert err.splitlines() == [f"strata: error: {message}"]


def hf_folders(revision: Path, root: Path) -> tuple[Path, Path]:
    """The revision saved by transformers as one file and as three shards, with its
    tokenizer (and no strata.json: plain Hugging Face folders)."""
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForCausalLM.from_pretrained(revision)
    single, sharded = root / "single", root / "sharded"
    hf.save_pretrained(single)
    hf.save_pretrained(sharded, max_shard_size="200KB")
    for folder in (single, sharded):
        for name in TOKENIZER_FILES:
            shutil.copy(revision / name, folder / name)
    return single, sharded


def test_sharded_hf_folder_generates_as_the_single_file(revision, tmp_path, capsys):
    single, sharded = hf_folders(revision, tmp_path)
    shards = sorted(p.name for p in sharded.glob("model-*-of-*.safetensors"))
    assert len(shards) > 1 and not (sharded / "model.safetensors").exists()
    assert (sharded / "model.safetensors.index.json").is_file()
    before = snapshot(sharded)
    outputs = []
    for folder in (revision, single, sharded):
        code, out, err = run_cli(capsys, "generate", str(folder), "--prompt", PROMPT,
                                 "--max-new-tokens", "12", "--temperature", "0")  # fmt: skip
        assert code == 0, err
        outputs.append(out)
    assert outputs[0].startswith(PROMPT) and len(outputs[0]) > len(PROMPT)
    assert outputs[1] == outputs[0] and outputs[2] == outputs[0]
    # Seeded sampling too: the same weights, in the same order, draw the same tokens.
    seeded = ["--prompt", PROMPT, "--max-new-tokens", "12", "--top-k", "20", "--seed", "3"]
    sampled = [
        run_cli(capsys, "generate", str(f), "--temperature", "1", *seeded)[1]
        for f in (single, sharded)
    ]
    assert sampled[0] == sampled[1]
    assert snapshot(sharded) == before  # read, never written


def test_sharded_hf_shards_stay_inside_the_folder(revision, tmp_path, capsys):
    _, sharded = hf_folders(revision, tmp_path)
    index_path = sharded / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    first = sorted(set(index["weight_map"].values()))[0]
    elsewhere = tmp_path / "elsewhere.safetensors"
    shutil.move(sharded / first, elsewhere)
    (sharded / first).symlink_to(elsewhere)  # a shard that is a link out: refused
    code, out, err = run_cli(capsys, "generate", str(sharded), "--prompt", PROMPT)
    assert code == 2 and len(err.splitlines()) == 1
    assert f"{first}: a symbolic link" in err
    escape = {k: f"../{elsewhere.name}" for k in index["weight_map"]}  # a name out: refused
    index_path.write_text(json.dumps({**index, "weight_map": escape}))
    code, out, err = run_cli(capsys, "generate", str(sharded), "--prompt", PROMPT)
    assert code == 2 and len(err.splitlines()) == 1
    assert "names '../elsewhere.safetensors', not a file inside" in err
