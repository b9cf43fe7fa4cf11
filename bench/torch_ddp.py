#!/usr/bin/python3
"""PyTorch side of bench_parallel: one Adam training step of the 3xHIDDEN Higgs MLP at global batch
BATCH, on 1 process (1 thread) or on WORKERS processes with DistributedDataParallel (gloo backend,
1 thread each, BATCH / WORKERS events per process).

Usage: torch_ddp.py --workers 1|2 [--hidden 256] [--batch 1024] [--repeats N] [--target SECONDS]

One step: zero the gradients (set to None), forward, BCEWithLogitsLoss, backward (DDP all-reduces
the gradients in buckets during it), torch.optim.Adam (lr 1e-3, foreach) step. Wall time: every
process runs the same number of steps per sample (fixed by rank 0's calibration) between
barriers; the sample is rank 0's time per step. Prints
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

from torch_train import make_mlp  # the same network as bench_train's peer


def run(rank, a, port, out):
    torch.set_num_threads(1)
    if a.workers > 1:
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(port)
        dist.init_process_group("gloo", rank=rank, world_size=a.workers)
    torch.manual_seed(1000 + a.hidden + a.batch)
    net = make_mlp(a.hidden)
    if a.workers > 1:
        net = torch.nn.parallel.DistributedDataParallel(net)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, foreach=True)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    local = a.batch // a.workers
    batches = [(torch.randn(local, 8), (torch.rand(local, 1) < 0.5).float()) for _ in range(16)]
    turn = [0]

    def step():
        x, y = batches[turn[0]]
        turn[0] = (turn[0] + 1) % len(batches)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()

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
