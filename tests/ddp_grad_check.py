"""Run by torchrun in tests/test_ddp.py: each rank takes its half of a fixed batch, does one
generator update through Family.update and saves the averaged gradients it ends with."""
import sys

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from imxlate.families.cyclegan import CycleGAN, CycleGANConfig

torch.set_num_threads(1)
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
family = CycleGAN(CycleGANConfig(ngf=8, ndf=8, n_blocks=1, lr=0.0), ["a", "b"], 32)
family.setup_training()
g = torch.Generator().manual_seed(1)
full = {d: torch.rand(4, 3, 32, 32, generator=g) * 2 - 1 for d in "ab"}
half = {d: x[2 * rank: 2 * rank + 2] for d, x in full.items()}
loss, _, _ = family.generator_losses(half["a"], half["b"])
family.update("G", loss)
grads = {n: p.grad for n, p in family.nets.named_parameters() if n.startswith("G_") and p.grad is not None}
save_file({k: v.contiguous() for k, v in grads.items()}, f"{sys.argv[1]}/grads{rank}.safetensors")
dist.barrier()
dist.destroy_process_group()
