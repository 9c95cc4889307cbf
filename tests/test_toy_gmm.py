"""The DiscoGAN toy example: its mode metrics, stacked seeds training as if alone, and a tiny run of its main()."""
import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "toy_gmm.py"
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def load_toy():
    """Import examples/toy_gmm.py as a module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location("toy_gmm", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_metrics_on_a_bijection_and_on_a_collapse():
    toy = load_toy()
    modes_b = toy.LAYOUTS["circle-arc"][1]
    gen = torch.Generator().manual_seed(0)
    source = torch.arange(10).repeat_interleave(50)
    noise = 0.5 * toy.SIGMA * torch.randn(len(source), 2, generator=gen)
    shuffled = torch.randperm(10, generator=gen)  # source mode i -> target mode shuffled[i]
    bijection = modes_b[shuffled[source]] + noise
    assert toy.modes_covered(bijection, modes_b) == 10
    assert toy.distinct_targets(bijection, source, modes_b) == 10

    collapsed = modes_b[3] + noise
    assert toy.modes_covered(collapsed, modes_b) == 1
    assert toy.distinct_targets(collapsed, source, modes_b) == 1

    # Two source modes sharing a target count once; points far from every mode cover nothing.
    pairs = modes_b[source // 2] + noise
    assert toy.modes_covered(pairs, modes_b) == 5
    assert toy.distinct_targets(pairs, source, modes_b) == 5
    far = torch.full((len(source), 2), 10.0)
    assert toy.modes_covered(far, modes_b) == 0
    assert toy.distinct_targets(far, source, modes_b) == 0


def test_the_paper_networks_and_shared_initial_weights():
    toy = load_toy()
    nets = toy.build("DiscoGAN", [0, 1])
    assert set(nets) == {"G_AB", "G_BA", "D_A", "D_B"}
    assert [tuple(w.shape) for w, _ in nets["G_AB"]] == [(2, 2, 64), (2, 64, 64), (2, 64, 2)]  # 3 linear layers
    assert len(nets["D_B"]) == 5 and nets["D_B"][-1][0].shape == (2, 64, 1)  # 5 linear layers, one logit
    assert not torch.equal(nets["G_AB"][0][0][0], nets["G_AB"][0][0][1])  # seeds differ
    for method, names in (("standard GAN", {"G_AB", "D_B"}), ("GAN + reconstruction", {"G_AB", "G_BA", "D_B"})):
        other = toy.build(method, [0, 1])
        assert set(other) == names
        for name in ("G_AB", "D_B"):  # every method starts from the seed's G_AB and D_B
            for (w, b), (w2, b2) in zip(nets[name], other[name]):
                assert torch.equal(w, w2) and torch.equal(b, b2)


def test_stacked_seeds_train_exactly_as_one_seed_alone():
    toy = load_toy()
    together = toy.train("DiscoGAN", [0, 1], steps=25, batch=16)
    alone = toy.train("DiscoGAN", [1], steps=25, batch=16)
    start = toy.build("DiscoGAN", [1])
    for name in together:
        for (w, b), (w1, b1), (w0, _) in zip(together[name], alone[name], start[name]):
            # Seed 1 of the stack equals seed 1 trained alone, up to float summation order ...
            torch.testing.assert_close(w[1:], w1, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(b[1:], b1, rtol=1e-4, atol=1e-6)
            assert not torch.equal(w1, w0)  # ... and it did train
    # The seeds' metrics come out per seed, in order.
    assert len(toy.evaluate(together, [0, 1], "circle-arc")) == 2


@pytest.mark.parametrize("figure", [pytest.param(True, marks=pytest.mark.skipif(not HAS_MATPLOTLIB,
                                                                                  reason="matplotlib not installed")),
                                    False])
def test_tiny_run_writes_the_table_and_figure(tmp_path, figure):
    toy = load_toy()
    readme = tmp_path / "README.md"
    readme.write_text("# Examples\n\nbefore\n\n<!-- toy-gmm:start -->\nold\n<!-- toy-gmm:end -->\n\nafter\n")
    out = tmp_path / "toy.png"
    argv = ["--seeds", "2", "--steps", "20", "--batch", "8", "--readme", str(readme), "--out", str(out)]
    results = toy.main(argv + ([] if figure else ["--no-figure"]))
    assert list(results) == list(toy.METHODS) and all(len(runs) == 2 for runs in results.values())
    for runs in results.values():
        assert all(0 <= r["covered"] <= 10 and 0 <= r["distinct"] <= 10 and 0 <= r["on_mode"] <= 1 for r in runs)

    text = readme.read_text()
    assert text.startswith("# Examples\n\nbefore\n") and text.endswith("\nafter\n") and "\nold\n" not in text
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert len(rows) == 2 + len(toy.METHODS)  # header, separator, one row per method
    for method, row in zip(toy.METHODS, rows[2:]):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[0] == method and len(cells) == 6
        assert "+-" in cells[1] and "+-" in cells[2]
        assert [int(v) for v in cells[4].split()] == [r["covered"] for r in results[method]]
        assert [int(v) for v in cells[5].split()] == [r["distinct"] for r in results[method]]
    assert "2 seeds x 20 iterations, batch 8" in text
    if figure:
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert not out.exists()

    readme.write_text("no markers here\n")
    with pytest.raises(SystemExit):
        toy.main(argv + ["--no-figure"])
