"""The DiscoGAN toy example: its mode metrics on hand-built samples and a short real training run."""
import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "toy_gmm.py"


def load_toy():
    """Import examples/toy_gmm.py as a module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location("toy_gmm", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_metrics_on_a_bijection_and_on_a_collapse():
    toy = load_toy()
    gen = torch.Generator().manual_seed(0)
    source = torch.arange(10).repeat_interleave(50)
    noise = 0.5 * toy.SIGMA * torch.randn(len(source), 2, generator=gen)
    shuffled = torch.randperm(10, generator=gen)  # source mode i -> target mode shuffled[i]
    bijection = toy.MODES_B[shuffled[source]] + noise
    assert toy.modes_covered(bijection, toy.MODES_B) == 10
    assert toy.distinct_targets(bijection, source, toy.MODES_B) == 10

    collapsed = toy.MODES_B[3] + noise
    assert toy.modes_covered(collapsed, toy.MODES_B) == 1
    assert toy.distinct_targets(collapsed, source, toy.MODES_B) == 1

    # Two source modes sharing a target count once; points far from every mode cover nothing.
    pairs = toy.MODES_B[source // 2] + noise
    assert toy.modes_covered(pairs, toy.MODES_B) == 5
    assert toy.distinct_targets(pairs, source, toy.MODES_B) == 5
    far = torch.full((len(source), 2), 10.0)
    assert toy.modes_covered(far, toy.MODES_B) == 0
    assert toy.distinct_targets(far, source, toy.MODES_B) == 0


def test_short_training_runs_and_is_seeded():
    toy = load_toy()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the script does: tiny nets, and threads stall on shared cores
    try:
        nets = toy.train("DiscoGAN", seed=0, steps=50, batch=64)
        again = toy.train("DiscoGAN", seed=0, steps=50, batch=64)
    finally:
        torch.set_num_threads(threads)
    assert set(nets) == {"G_AB", "G_BA", "D_A", "D_B"}
    for name in nets:
        for p, q in zip(nets[name].parameters(), again[name].parameters()):
            assert torch.equal(p, q)
    untrained = toy.build("DiscoGAN", 0)
    assert not torch.equal(nets["G_AB"][0].weight, untrained["G_AB"][0].weight)
    result = toy.evaluate(nets, 0)
    assert 0 <= result["covered"] <= 10 and 0 <= result["distinct"] <= 10 and 0 <= result["on_mode"] <= 1
    # Methods share the seed's initial G_AB and D_B; only DiscoGAN has D_A.
    standard = toy.build("standard GAN", 0)
    assert set(standard) == {"G_AB", "D_B"}
    assert torch.equal(standard["G_AB"][0].weight, untrained["G_AB"][0].weight)
    assert set(toy.build("GAN + reconstruction", 0)) == {"G_AB", "G_BA", "D_B"}
