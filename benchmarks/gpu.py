"""GPU figures: translate images/s per precision, a training step per family with AMP, peak memory, DDP.

    python benchmarks/gpu.py                       # on a CUDA GPU: 256 and 1024 px, fp32/bf16/fp16
    python benchmarks/gpu.py --sizes 32 --ngf 4 --n-blocks 1 --steps 1 --families cyclegan   # tiny, seconds

Without a GPU it runs a CPU form (the sizes given, fp32 and bf16 only, training steps without AMP) and
says which GPU parts it skipped. Peak memory is torch.cuda.max_memory_allocated per measurement. The
2-rank part runs `torchrun --nproc_per_node 2` on one GPU (a DDP step of one generator) when NCCL is
there and allows two ranks on one device, else it says it skipped.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import median  # noqa: E402

from imxlate.device import describe_machine, pick_device  # noqa: E402
from imxlate.families import REGISTRY, build_family  # noqa: E402
from imxlate.translate import Translator  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_reset(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak(device) -> str:
    return f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB peak" if device.type == "cuda" else "-"


def translate_rates(args, device) -> None:
    precisions = ["fp32", "bf16", "fp16"] if device.type == "cuda" else ["fp32", "bf16"]
    for size in args.sizes:
        for precision in precisions:
            torch.manual_seed(0)
            family = build_family("cyclegan", {"ngf": args.ngf, "n_blocks": args.n_blocks}, ["a", "b"], size)
            family.to(device).eval()
            tr = Translator(family, Path("benchmark"), precision)
            x = torch.rand(args.batch, 3, size, size) * 2 - 1
            tr.translate_tensor(x, "b", max_memory="1TB")  # warm-up (cuDNN picks its kernels)
            rates = []
            peak_reset(device)
            for _ in range(args.repeats):
                sync(device)
                t0, n = time.perf_counter(), 0
                while n < args.min_images or time.perf_counter() - t0 < args.seconds:
                    tr.translate_tensor(x, "b", max_memory="1TB")
                    n += args.batch
                sync(device)
                rates.append(n / (time.perf_counter() - t0))
            print(f"translate {size}x{size} batch {args.batch} {precision}: {median(rates):.2f} images/s "
                  f"(median of {len(rates)}); {peak(device)}", flush=True)


def train_steps(args, device) -> None:
    amps = ["none", "bf16", "fp16"] if device.type == "cuda" else ["none"]
    for name in args.families:
        for amp in amps:
            cfg = {"ngf": args.ngf, "n_blocks": args.n_blocks, "ndf": args.ngf}
            domains = ["a", "b", "c"] if name == "stargan" else ["a", "b"]
            classes = {d: ["x", "y"] for d in domains}
            try:
                family = build_family(name, cfg, domains, args.train_size, classes).to(device)
                family.setup_training(amp)
                family.train()
                b = args.train_batch
                batch = {"images": {d: torch.rand(b, 3, args.train_size, args.train_size, device=device) * 2 - 1
                                    for d in domains},
                         "labels": {d: torch.randint(0, 2, (b,), device=device) for d in domains}}
                family.train_step(batch, 0)  # warm-up
                peak_reset(device)
                times = []
                for r in range(args.repeats):
                    sync(device)
                    t0 = time.perf_counter()
                    for i in range(args.steps):
                        family.train_step(batch, 1 + r * args.steps + i)
                    sync(device)
                    times.append((time.perf_counter() - t0) / args.steps)
            except Exception as e:  # a family that needs other data: say so, go on with the others
                print(f"train step {name} amp {amp}: skipped ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
                continue
            print(f"train step {name} {args.train_size}x{args.train_size} batch {args.train_batch} amp {amp}: "
                  f"{median(times):.3f} s/step (median of {len(times)} x {args.steps}); {peak(device)}", flush=True)


DDP_STEP = """
import os, time, torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from imxlate.families import build_family
dist.init_process_group("nccl")
rank = dist.get_rank()
torch.cuda.set_device(0)  # both ranks share the one GPU
net = build_family("cyclegan", {{"ngf": {ngf}, "n_blocks": {n_blocks}}}, ["a", "b"], {size}).nets["G_ab"].cuda()
ddp = DDP(net, device_ids=[0])
opt = torch.optim.Adam(ddp.parameters(), 2e-4)
x = torch.rand(1, 3, {size}, {size}, device="cuda")
for i in range({steps} + 1):
    if i == 1:
        torch.cuda.synchronize(); t0 = time.perf_counter()
    opt.zero_grad(); ddp(x).square().mean().backward(); opt.step()
torch.cuda.synchronize()
if rank == 0:
    print(f"ddp 2 ranks on one GPU, generator step {size}x{size}: {{(time.perf_counter() - t0) / {steps}:.3f}} s/step")
dist.destroy_process_group()
"""


def ddp(args, device) -> None:
    if device.type != "cuda":
        print("ddp: skipped (no GPU)")
        return
    if not torch.distributed.is_nccl_available():
        print("ddp: skipped (this torch has no NCCL)")
        return
    code = DDP_STEP.format(ngf=args.ngf, n_blocks=args.n_blocks, size=args.train_size, steps=args.steps)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "--no-python", sys.executable, "-c", code],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "NCCL_P2P_DISABLE": "1"})
    lines = [l for l in run.stdout.splitlines() if l.startswith("ddp")]
    if run.returncode == 0 and lines:
        print(lines[-1])
    else:  # NCCL refuses two ranks on one GPU in some versions
        tail = (run.stderr.strip().splitlines() or ["no output"])[-1][:160]
        print(f"ddp: skipped (2 ranks on one GPU failed: {tail})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="translate sizes (GPU: 256 1024; CPU: 64)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--ngf", type=int, default=64)
    ap.add_argument("--n-blocks", type=int, default=9)
    ap.add_argument("--families", nargs="+", default=sorted(REGISTRY), choices=sorted(REGISTRY))
    ap.add_argument("--train-size", type=int, default=None, help="training image size (GPU: 256; CPU: 32)")
    ap.add_argument("--train-batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=1.0, help="least time per translate measurement")
    ap.add_argument("--min-images", type=int, default=4)
    args = ap.parse_args()
    device = pick_device(args.device)
    gpu = device.type == "cuda"
    args.sizes = args.sizes or ([256, 1024] if gpu else [64])
    args.train_size = args.train_size or (256 if gpu else 32)
    print(f"machine: {describe_machine(device)}; device {device}")
    if not gpu:
        print("no CUDA GPU: CPU form (fp32 and bf16 translate, training without AMP); skipped: fp16, AMP "
              "training steps, peak GPU memory, 2-rank DDP")
    translate_rates(args, device)
    train_steps(args, device)
    ddp(args, device)


if __name__ == "__main__":
    main()
