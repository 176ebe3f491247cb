"""torch's threads handed to aimc's worker lanes during a model's forward (``aimc.nn.threads``): who runs on how many
threads inside the forward, the thread count restored afterwards (also when the forward raises), and the same numbers
whether or not the threads were handed over."""

import pytest
import torch
from torch import nn

import aimc
from aimc.nn.threads import lane_count


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


class Probe(nn.Module):
    """Records (torch threads, aimc lanes) when called; raises when asked to."""

    def __init__(self):
        super().__init__()
        self.seen = []
        self.fail = False

    def forward(self, x):
        self.seen.append((torch.get_num_threads(), lane_count()))
        if self.fail:
            raise RuntimeError("probe failure")
        return x


def _model(make_layer, preset="aihwkit_default"):
    """(converted Sequential(layer, ReLU, Probe), its probe); ``convert`` copies the model, so the probe is read
    from the copy."""
    torch.manual_seed(0)
    a = aimc.convert(nn.Sequential(make_layer(), nn.ReLU(), Probe()), aimc.presets.get(preset)).eval()
    aimc.program(a, seed=0)
    aimc.at_time(a, 3600.0, seed=0)
    return a, a[2]


def test_forward_hands_torch_threads_to_the_lanes(two_threads):
    """A model with an ungrouped analog convolution (dynamic ranges): inside its forward torch runs on 1 thread and
    aimc's lanes get the 2; afterwards torch has 2 again. A model without one (a Linear, or a static-range preset
    whose convolutions stay torch convolutions) or with a grouped convolution on the matrix path keeps torch's
    threads."""
    a, probe = _model(lambda: nn.Conv2d(3, 8, 3, padding=1))
    with torch.inference_mode():
        a(torch.randn(2, 3, 8, 8))
    assert probe.seen == [(1, 2)]
    assert torch.get_num_threads() == 2 and lane_count() == 2
    for make, preset in [(lambda: nn.Linear(8, 8), "aihwkit_default"),
                         (lambda: nn.Conv2d(3, 8, 3, padding=1), "joshi2020"),
                         (lambda: nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=4)), "aihwkit_default")]:
        b, probe = _model(make, preset)
        with torch.inference_mode():
            b(torch.randn(2, 8) if isinstance(make(), nn.Linear) else torch.randn(2, 3, 8, 8))
        assert probe.seen == [(2, 2)]


def test_train_mode_keeps_torch_threads(two_threads):
    a, probe = _model(lambda: nn.Conv2d(3, 8, 3, padding=1))
    a.train()
    a(torch.randn(2, 3, 8, 8))
    assert probe.seen == [(2, 2)]


def test_layers_listed_once_per_install_and_asked_every_forward(two_threads):
    """The hooks list the model's lane-voting layers once (``threads._voters``) and ask them at every forward, so a
    mode change counts at once; ``program`` (``install``) lists them again, so a layer swapped in counts after it."""
    from aimc.nn import threads

    a, probe = _model(lambda: nn.Conv2d(3, 8, 3, padding=1))
    x = torch.randn(2, 3, 8, 8)
    with torch.inference_mode():
        a(x)
    assert [type(m).__name__ for m in threads._voters[a]] == ["AnalogConv2d"]
    a[0].train()  # the layer's vote changes: torch keeps its threads
    with torch.inference_mode():
        a(x)
    a[0].eval()
    grouped = aimc.convert(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8)), aimc.presets.aihwkit_default())
    aimc.program(grouped, seed=0)
    aimc.at_time(grouped, 3600.0, seed=0)
    a[1] = grouped[0].eval()  # a grouped convolution swapped in for the ReLU: counted after the next program
    with torch.inference_mode():
        a(x)
    aimc.program(a, seed=0)
    aimc.at_time(a, 3600.0, seed=0)
    with torch.inference_mode():
        a(torch.randn(2, 3, 8, 8).relu())
    assert len(threads._voters[a]) == 2
    assert probe.seen == [(1, 2), (2, 2), (1, 2), (2, 2)]


def test_thread_count_restored_when_the_forward_raises(two_threads):
    a, probe = _model(lambda: nn.Conv2d(3, 8, 3, padding=1))
    probe.fail = True
    with pytest.raises(RuntimeError, match="probe failure"), torch.inference_mode():
        a(torch.randn(2, 3, 8, 8))
    assert probe.seen == [(1, 2)]
    assert torch.get_num_threads() == 2 and lane_count() == 2
    probe.fail = False
    with torch.inference_mode():
        a(torch.randn(2, 3, 8, 8))  # and the next forward hands over again
    assert probe.seen[-1] == (1, 2)


def test_same_numbers_with_and_without_the_hand_over(two_threads):
    """The model's forward (threads handed over: torch on 1 thread, 2 lanes) and its layers called one by one
    (torch on 2 threads, 2 lanes) and the model at 1 thread give bit-identical outputs: a ResNet-like stack with
    output noise, bound management and a convolution of two row tiles (576 rows > 512), on outputs large enough
    for the noise to be split."""
    torch.manual_seed(0)
    base = nn.Sequential(nn.Conv2d(16, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                         nn.Conv2d(64, 32, 3, padding=1), nn.ReLU()).eval()
    a = aimc.convert(base, aimc.presets.aihwkit_default()).eval()
    assert len(a[3].analog.layout.row_bounds) == 2
    x = torch.randn(24, 16, 12, 12, generator=torch.Generator().manual_seed(1))

    def run(fn, n):
        torch.set_num_threads(n)
        aimc.program(a, seed=0)
        aimc.at_time(a, 86400.0, seed=0)  # resets the forward's noise generators
        with torch.inference_mode():
            return fn(x)

    def one_by_one(x):
        for m in a:
            x = m(x)
        return x

    handed = run(a, 2)
    assert torch.equal(handed, run(one_by_one, 2))
    assert torch.equal(handed, run(a, 1))
    assert not torch.equal(handed, run(lambda x: a(x * 1.01), 2))


class Branchy(nn.Module):
    """Three convolutions (the middle one of two row tiles: 576 rows > 512); ``skip`` leaves the middle one out, so
    the order of the analog layers changes between forwards."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(8, 64, 3, padding=1)
        self.b = nn.Conv2d(64, 64, 3, padding=1)
        self.c = nn.Conv2d(64, 16, 3, padding=1)
        self.skip = False

    def forward(self, x):
        x = torch.relu(self.a(x))
        if not self.skip:
            x = torch.relu(self.b(x))
        return self.c(x)


def _branchy():
    torch.manual_seed(0)
    a = aimc.convert(Branchy(), aimc.presets.aihwkit_default()).eval()
    aimc.program(a, seed=0)
    return a


def _forward(a, x, n_threads, skip=False):
    """One forward at ``n_threads`` right after ``at_time`` (which resets the noise generators), and the layers'
    generator states afterwards."""
    torch.set_num_threads(1)
    aimc.at_time(a, 86400.0, seed=0)
    torch.set_num_threads(n_threads)
    a.skip = skip
    with torch.inference_mode():
        y = a(x)
    return y, [m.analog._forward_gen.get_state() for m in (a.a, a.b, a.c)]


def test_noise_drawn_ahead_gives_the_same_numbers(two_threads, monkeypatch):
    """At 2 threads a forward draws each convolution's noise ahead on a worker thread in the order the previous
    forward recorded (used here: counted). Outputs and generator states afterwards are bit-identical to one thread,
    also when the plan does not hold: another batch size, or a layer left out (its draw under way is discarded and its
    generator put back)."""
    from aimc.nn import noise_ahead

    used = []
    take = noise_ahead.take
    monkeypatch.setattr(noise_ahead, "take", lambda *args: _count(take, used, *args))
    a = _branchy()
    x = torch.randn(6, 8, 24, 24, generator=torch.Generator().manual_seed(1))  # outputs ≥ MIN_SPLIT: split noise
    ref, ref_states = _forward(a, x, 1)
    assert not any(used)
    for _ in range(2):  # the first forward records the order, the second draws ahead
        out, states = _forward(a, x, 2)
        assert torch.equal(out, ref) and all(torch.equal(s, r) for s, r in zip(states, ref_states))
    assert sum(used) == 3  # a, b, c in the second forward
    small, small_states = _forward(a, x[:2], 1)
    out, states = _forward(a, x[:2], 2)  # another shape: every draw ahead discarded
    assert torch.equal(out, small) and all(torch.equal(s, r) for s, r in zip(states, small_states))
    _forward(a, x, 2)
    skipped, skipped_states = _forward(a, x, 1, skip=True)
    used.clear()
    out, states = _forward(a, x, 2, skip=True)  # b's draw (planned after a) is discarded when c runs
    assert torch.equal(out, skipped) and all(torch.equal(s, r) for s, r in zip(states, skipped_states))
    assert used == [True, False]


def _count(take, used, *args):
    r = take(*args)
    used.append(r is not None)
    return r
