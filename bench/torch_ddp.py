#!/usr/bin/python3
"""PyTorch side of bench_parallel, on 1 process (1 thread) or on WORKERS processes with
DistributedDataParallel (gloo backend, 1 thread each, BATCH / WORKERS events per process):
  --model mlp:  one Adam training step of the 3xHIDDEN Higgs MLP at global batch BATCH (the step
                of torch_train.py: zero the gradients, forward, BCEWithLogitsLoss, backward (DDP
                all-reduces the gradients in buckets during it), Adam step);
  --model wgan: the WGAN-GP step of torch_wgan.py (5 critic steps with the gradient penalty, then
                1 generator step) at global batch BATCH (128), critic and generator wrapped in
                DDP; the generator step goes through the critic's own module, so the critic's
                gradients from it are not all-reduced (as on one process).

Usage: torch_ddp.py --workers 1|2 [--model mlp|wgan] [--hidden 256] [--batch 1024] [--repeats N] [--target SECONDS]

Wall time: every process runs the same number of steps per sample (fixed by rank 0's
calibration) between barriers; the sample is rank 0's time per step. Prints
    torch_ddp WORKERS MEDIAN_S MIN_S MAX_S TORCH_VERSION
"""
import argparse
import os
import statistics
import sys
import time

try:
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
except ImportError:
    print("torch_ddp: PyTorch not importable", file=sys.stderr)
    sys.exit(3)

import torch_wgan
from torch_train import make_mlp, make_step  # the same network and step as bench_train's peer


def run(rank, a, port, out):
    torch.set_num_threads(1)
    if a.workers > 1:
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(port)
        dist.init_process_group("gloo", rank=rank, world_size=a.workers)
    local = a.batch // a.workers
    ddp = torch.nn.parallel.DistributedDataParallel if a.workers > 1 else (lambda m: m)
    if a.model == "wgan":
        torch.manual_seed(2002)
        gen = torch_wgan.mlp([torch_wgan.LATENT, 512, 1024, 512, torch_wgan.FEATURES])
        critic = torch_wgan.mlp([torch_wgan.FEATURES, 512, 512, 512, 1])
        opt_g = torch.optim.Adam(gen.parameters(), lr=1e-4, betas=(0.5, 0.9), foreach=True)
        opt_c = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.5, 0.9), foreach=True)
        pool = torch.rand(torch_wgan.POOL, torch_wgan.FEATURES)
        torch.manual_seed(77 + rank)  # each rank its own events
        step = torch_wgan.make_step(ddp(gen), ddp(critic), opt_g, opt_c, pool, local, critic_for_gen=critic)
    else:
        torch.manual_seed(1000 + a.hidden + a.batch)
        net = make_mlp(a.hidden)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, foreach=True)
        batches = [(torch.randn(local, 8), (torch.rand(local, 1) < 0.5).float()) for _ in range(16)]
        step = make_step(ddp(net), opt, batches)

    inner = 1
    while True:  # warm-up and calibration on every rank; rank 0's count wins
        t0 = time.perf_counter()
        for _ in range(inner):
            step()
        done = time.perf_counter() - t0 > a.target or inner > (1 << 20)
        flag = torch.tensor([1 if done else 0])
        if a.workers > 1:
            dist.broadcast(flag, 0)
        if flag.item():
            break
        inner *= 2
    samples = []
    for _ in range(a.repeats):
        if a.workers > 1:
            dist.barrier()
        t0 = time.perf_counter()
        for _ in range(inner):
            step()
        if a.workers > 1:
            dist.barrier()
        samples.append((time.perf_counter() - t0) / inner)
    if rank == 0:
        out.put((statistics.median(samples), min(samples), max(samples)))
    if a.workers > 1:
        dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--model", choices=["mlp", "wgan"], default="mlp")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--target", type=float, default=0.02)
    a = ap.parse_args()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = 29500 + os.getpid() % 1000
    if a.workers == 1:
        run(0, a, port, out)
    else:
        procs = [ctx.Process(target=run, args=(r, a, port, out)) for r in range(a.workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        if any(p.exitcode != 0 for p in procs):
            sys.exit(1)
    med, lo, hi = out.get()
    print("torch_ddp %d %.9g %.9g %.9g %s" % (a.workers, med, lo, hi, torch.__version__), flush=True)


if __name__ == "__main__":
    main()
