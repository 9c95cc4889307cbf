"""GAN objectives (lsgan, vanilla, wgan-gp, hinge), the gradient penalty and reconstruction distances."""
from __future__ import annotations

import torch
import torch.nn.functional as F

GAN_LOSSES = ("lsgan", "vanilla", "wgan-gp", "hinge")


def d_loss(kind: str, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss from its raw outputs on real and on generated samples."""
    if kind == "lsgan":  # LSGAN (Mao et al.), halved as in the CycleGAN reference
        return 0.5 * (F.mse_loss(real_logits, torch.ones_like(real_logits))
                      + F.mse_loss(fake_logits, torch.zeros_like(fake_logits)))
    if kind == "vanilla":
        return 0.5 * (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                      + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
    if kind == "wgan-gp":
        return fake_logits.mean() - real_logits.mean()
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    raise ValueError(f"unknown GAN loss {kind!r}; choose from {', '.join(GAN_LOSSES)}")


def g_loss(kind: str, fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator loss from the discriminator's raw outputs on generated samples."""
    if kind == "lsgan":
        return F.mse_loss(fake_logits, torch.ones_like(fake_logits))
    if kind == "vanilla":  # non-saturating
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    if kind in ("wgan-gp", "hinge"):
        return -fake_logits.mean()
    raise ValueError(f"unknown GAN loss {kind!r}; choose from {', '.join(GAN_LOSSES)}")


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, generator=None) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al.): E[(||grad critic(x_hat)|| - 1)^2] on random interpolates.

    `critic` maps a batch to scores (or a tuple whose first item is the scores).
    """
    alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, generator=generator)
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    out = critic(x_hat)
    out = out[0] if isinstance(out, tuple) else out
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def critic_loss(kind: str, D, real: torch.Tensor, fake: torch.Tensor, lambda_gp: float = 10.0) -> torch.Tensor:
    """Discriminator loss on real and (detached) fake images, plus the gradient penalty whenever kind is wgan-gp."""
    loss = d_loss(kind, D(real), D(fake.detach()))
    if kind == "wgan-gp":
        loss = loss + lambda_gp * gradient_penalty(D, real, fake)
    return loss


def distance(kind: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Reconstruction distance: 'l1', 'mse' or 'cosine' (1 - cosine similarity per sample)."""
    if kind == "l1":
        return F.l1_loss(a, b)
    if kind == "mse":
        return F.mse_loss(a, b)
    if kind == "cosine":
        return (1 - F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)).mean()
    raise ValueError(f"unknown distance {kind!r}; choose from l1, mse, cosine")


def patch_nce(q: torch.Tensor, k: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """PatchNCE (Park et al. 2020): (B, n, D) unit vectors of output patches `q` and of the input patches `k`
    at the same places. Each q is classified against its own k (the positive) and the n-1 other patches of
    the same image (negatives) by softmax cross-entropy on cosine similarity / temperature; mean over patches.
    Keys are constants (no gradient)."""
    k = k.detach()
    sim = torch.bmm(q, k.transpose(1, 2))  # (B, n, n): [i, j] = q_i . k_j; the diagonal holds the positives
    return F.cross_entropy(sim.flatten(0, 1) / temperature,
                           torch.arange(q.shape[1], device=q.device).repeat(q.shape[0]))
