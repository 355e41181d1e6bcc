import pytest

from hf_ssl_robust.timing import PhaseTimer


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_phase_timer__accumulates_repeated_and_nested_phases():
    clock, synced = FakeClock(), []
    timer = PhaseTimer(synchronize=lambda: synced.append(1), clock=clock)
    with timer("evaluation"):
        clock.now += 2.0
        with timer("evaluation/pgd"):
            clock.now += 1.5
    with timer("evaluation"):
        clock.now += 0.5
    assert timer.as_dict() == {"evaluation/pgd": 1.5, "evaluation": 4.0}
    assert timer.calls == {"evaluation": 2, "evaluation/pgd": 1} and len(synced) == 6
    assert timer.summary().splitlines()[0].endswith("evaluation (×2)")


def test_phase_timer__an_interrupted_phase_is_still_charged_and_names_are_required():
    clock = FakeClock()
    timer = PhaseTimer(clock=clock)
    with pytest.raises(KeyboardInterrupt), timer("head training"):
        clock.now += 3.0
        raise KeyboardInterrupt
    assert timer.as_dict() == {"head training": 3.0}
    with pytest.raises(ValueError, match="a phase needs a name"), timer(""):
        pass
