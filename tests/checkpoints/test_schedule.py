"""The Pythia publication schedule."""

from strata.checkpoints.schedule import publish_steps


def test_pythia_schedule():
    steps = publish_steps(143000, 1000)
    assert steps[:11] == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    assert steps[11:14] == [1000, 2000, 3000] and steps[-1] == 143000
    assert len(steps) == 11 + 143  # Pythia's 154 revisions


def test_last_step_and_extras():
    assert publish_steps(300, 1000, extra_steps=[150, 5000]) == [
        0,
        1,
        2,
        4,
        8,
        16,
        32,
        64,
        128,
        150,
        256,
        300,
    ]
    assert publish_steps(10, 4) == [0, 1, 2, 4, 8, 10]
    assert publish_steps(10, 4, log_spaced=False) == [0, 4, 8, 10]
