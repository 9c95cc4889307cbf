"""Training on several processes (torchrun): joining the group, sharing rank 0's values, averaging gradients.

Families never see this module: the loop joins the group and `optim.Optimizers.update` calls
`average_gradients` where an optimizer steps.
"""
from __future__ import annotations

import hashlib
import os

import torch
import torch.distributed as dist


def dist_setup() -> tuple[int, int, int]:
    """Join the torchrun process group when launched by torchrun -> (rank, world size, local rank)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size(), local


def dist_broadcast(obj):
    """Rank 0's value of `obj` on every rank (identity when not distributed)."""
    if dist.is_initialized():
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return obj


def param_digest(family) -> str:
    """SHA-256 over every parameter of the family, to compare ranks."""
    h = hashlib.sha256()
    for p in family.nets.parameters():
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def average_gradients(params) -> None:
    """Replace each gradient by its mean over the ranks (one all-reduce of all of them); no-op alone."""
    if world_size() <= 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if grads:
        flat = torch.cat([g.flatten() for g in grads])
        dist.all_reduce(flat)
        flat /= dist.get_world_size()
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()
