"""Signs that a GAN run has collapsed, watched while it trains; each sign is reported once, with what to try.

Four signs, all cheap: translations of the fixed sample images that are the same picture whatever the
input (a generator that ignores its input; tanh saturation then says why it will not recover), a
discriminator loss near zero for a long stretch (it wins outright and the generator learns nothing), and
a cycle loss that moves in lockstep with the identity loss (the backward generator writes one image
whatever it is given, so reconstructing a translation costs exactly what copying the original does).
"""
from __future__ import annotations

from collections import deque

import torch

CHECK_EVERY = 25      # steps between looks at the translations of the fixed sample images
PATIENCE = 100        # steps a loss sign must hold before it is reported
FLAT = 2e-3           # mean spread of translations across the batch below which they count as one image
SATURATED = 0.999     # |output| beyond which tanh passes (almost) no gradient back
D_NEAR_ZERO = 1e-2    # a discriminator loss below this wins outright
# Discriminator terms that go to zero in healthy runs: StarGAN's domain classification of real images and the
# WGAN-GP gradient penalty. Only the adversarial terms say that D wins.
NOT_ADVERSARIAL = ("_cls", "_gp")
LOCKSTEP = 1e-3       # relative wobble of cycle / identity within which the two move as one

ADVICE = ("try --norm instance (an un-normalised generator drifts to one flat colour under Adam: "
          "examples/glyphs/README.md), a lower --lr, or --model cut")


class CollapseWatch:
    """Feed it each step's losses and, every CHECK_EVERY steps, the translations of the sample images;
    it returns the warnings that are new (each kind of sign, per network, once per run)."""

    def __init__(self):
        self.said: set[str] = set()
        self.history: dict[str, deque] = {}

    def _once(self, key: str, message: str) -> list[str]:
        if key in self.said:
            return []
        self.said.add(key)
        return [message]

    def losses(self, step: int, losses: dict[str, float]) -> list[str]:
        out = []
        for k, v in losses.items():
            self.history.setdefault(k, deque(maxlen=PATIENCE)).append(v)
        for k, h in self.history.items():
            if k.startswith("D") and not k.endswith(NOT_ADVERSARIAL) and len(h) == PATIENCE and all(0 <= v < D_NEAR_ZERO for v in h):
                out += self._once(f"dzero:{k}", f"the discriminator loss {k} has stayed below {D_NEAR_ZERO} for "
                                  f"{PATIENCE} steps: it tells real from translated without error, so the "
                                  f"generator gets no useful signal; {ADVICE}")
        for k in losses:
            if not k.startswith("cycle_") or f"idt_{k[6:]}" not in losses:
                continue
            cyc, idt = self.history[k], self.history[f"idt_{k[6:]}"]
            if len(cyc) == PATIENCE and min(idt) > 0:
                ratios = [c / i for c, i in zip(cyc, idt)]
                if max(ratios) <= min(ratios) * (1 + LOCKSTEP):
                    out += self._once(f"lockstep:{k}", f"{k} and idt_{k[6:]} have moved in lockstep for {PATIENCE} "
                                      "steps: the backward generator writes the same image whatever it is given; "
                                      + ADVICE)
        return out

    def outputs(self, step: int, src: str, dst: str, x: torch.Tensor, y: torch.Tensor) -> list[str]:
        """`x` the (N, 3, H, W) inputs in [-1, 1], `y` their translations into `dst`."""
        if len(x) < 2 or float(x.std(0).mean()) < 10 * FLAT:
            return []  # too few or too alike inputs to tell
        spread = float(y.float().std(0).mean())
        if spread >= FLAT:
            return []
        saturated = float((y.abs() > SATURATED).float().mean())
        why = (f"; {saturated:.0%} of its pixels sit at +-1, where tanh passes no gradient back, so it will not "
               "recover by itself") if saturated > 0.5 else ""
        return self._once(f"flat:{src}->{dst}", f"{src} -> {dst} translations are one image for every input (spread "
                          f"{spread:.4f} across the sample batch){why}: the generator has collapsed; {ADVICE}")

    def state(self) -> dict:
        return {"said": sorted(self.said)}

    def load(self, state: dict) -> None:
        self.said = set(state.get("said", []))


@torch.no_grad()
def look(family, watch: CollapseWatch, step: int, images: dict[str, torch.Tensor], limit: int = 6) -> list[str]:
    """Translate the sample images along the family's first `limit` directions and ask `watch` about them.
    Draws nothing from the global RNG (stochastic families get their own generator), so runs stay exact."""
    out = []
    family.eval()
    try:
        for src, dst in family.directions()[:limit]:
            y = family.translate(images[src], dst, src, generator=torch.Generator().manual_seed(0))
            out += watch.outputs(step, src, dst, images[src], y)
    finally:
        family.train()
    return out
