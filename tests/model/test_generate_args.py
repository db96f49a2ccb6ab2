"""`generate` checks its sampling arguments before any forward pass: a NaN temperature,
`top_p = 0`, a negative top-k or length is one ValueError naming the argument."""

import math

import pytest
import torch
from strata.model import GPT, ModelConfig
from strata.model.generate import generate


@pytest.fixture(scope="module")
def model() -> GPT:
    model = GPT(ModelConfig.from_preset("debug", vocab_size=64))
    model.init_weights(seed=0)
    return model.eval()


BAD = [
    ("max_new_tokens", -1, "an integer >= 0"),
    ("max_new_tokens", 2.0, "an integer >= 0"),
    ("temperature", math.nan, r"a finite number >= 0 \(0 = greedy\)"),
    ("temperature", math.inf, r"a finite number >= 0 \(0 = greedy\)"),
    ("temperature", -0.5, r"a finite number >= 0 \(0 = greedy\)"),
    ("top_k", -1, r"an integer >= 0 \(0 = no top-k filter\)"),
    ("top_k", 2.5, r"an integer >= 0 \(0 = no top-k filter\)"),
    ("top_p", 0.0, r"a number in \(0, 1\] \(1 = off\)"),
    ("top_p", -0.1, r"a number in \(0, 1\] \(1 = off\)"),
    ("top_p", 1.5, r"a number in \(0, 1\] \(1 = off\)"),
    ("top_p", math.nan, r"a number in \(0, 1\] \(1 = off\)"),
]


@pytest.mark.parametrize("name, value, expected", BAD)
def test_bad_sampling_argument_is_one_value_error_naming_it(model, name, value, expected):
    args = {"max_new_tokens": 4, "temperature": 0.8, "top_k": 0, "top_p": 1.0, name: value}
    prompt = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=rf"^{name} = {value!r}: expected {expected}$"):
        generate(model, prompt, **args)


def test_edge_values_are_accepted(model):
    from strata.model.generate import Sampling

    prompt = torch.zeros(1, 3, dtype=torch.long)
    assert torch.equal(generate(model, prompt, max_new_tokens=0), prompt)  # nothing added
    greedy = generate(model, prompt, 5, temperature=0, top_k=0, top_p=1.0)
    assert greedy.shape == (1, 8)
    gen = torch.Generator().manual_seed(0)
    sampled = generate(model, prompt, 5, temperature=1, top_k=1, top_p=1e-6, generator=gen)
    assert torch.equal(sampled, greedy)  # top-1 and a tiny nucleus both keep the argmax only
    assert Sampling(temperature=0, top_p=1) == Sampling(temperature=0.0, top_p=1.0)
