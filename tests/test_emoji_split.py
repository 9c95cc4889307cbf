"""The emoji data recipe's split: a held-out test set, and unpaired halves with the same kinds of emoji."""
from __future__ import annotations

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("prepare", Path(__file__).resolve().parents[1] / "examples/emoji/prepare.py")
prepare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prepare)


def test_halves_are_disjoint_and_the_test_set_does_not_depend_on_them():
    # three runs of neighbouring code points, as Unicode groups alike emoji (zodiac signs, squares, clocks)
    points = [*range(0x2648, 0x2654), *range(0x1F7E0, 0x1F7EC), *range(0x1F550, 0x1F568), *range(0x1F600, 0x1F650)]
    a, b, test = prepare.split(points, seed=0, n_test=20)
    a_random, b_random, test_random = prepare.split(points, seed=0, n_test=20, halves="random")
    assert test == test_random and len(test) == 20
    for x, y in ((a, b), (a_random, b_random)):
        assert not set(x) & set(y) and not (set(x) | set(y)) & set(test)
        assert sorted([*x, *y, *test]) == sorted(points)
    assert abs(len(a) - len(b)) <= 1
    # interleaved: each group of neighbours is shared between A and B within one image
    for group in (range(0x2648, 0x2654), range(0x1F7E0, 0x1F7EC), range(0x1F550, 0x1F568)):
        in_a, in_b = len(set(group) & set(a)), len(set(group) & set(b))
        assert abs(in_a - in_b) <= 1, (hex(group.start), in_a, in_b)
