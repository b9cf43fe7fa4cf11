#!/usr/bin/python3
"""PyTorch side of bench_train: one Adam training step of the Higgs MLPs, one thread.

Usage: torch_train.py [--hidden 64,256,1024] [--batch 32,128,1024] [--repeats N] [--target SECONDS] [--wall]
                      [--same-batch]

The MLP: 8 inputs, 3 hidden Linear+ReLU layers of HIDDEN units, 1 output (a logit), float32.
One step: zero the gradients (set to None, PyTorch's cheapest), forward, BCEWithLogitsLoss,
backward, torch.optim.Adam (lr 1e-3, foreach) step, as bench_train does for tapir; each step takes
the next of 16 random batches (--same-batch: one batch, reused). Timed in process CPU time
(time.process_time, counting any helper thread), or wall time with --wall: after a warm-up, the
median of REPEATS samples of about TARGET seconds each. bench_train runs this with
OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 (torch.set_num_threads(1) does not reach OpenBLAS's
own pool). Prints one line per configuration:
    torch_train HIDDEN BATCH MEDIAN_S MIN_S MAX_S TORCH_VERSION
"""
import argparse
import statistics
import sys
import time

try:
    import torch
except ImportError:
    print("torch_train: PyTorch not importable", file=sys.stderr)
    sys.exit(3)


def make_mlp(hidden):
    return torch.nn.Sequential(
        torch.nn.Linear(8, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, 1))


def make_step(net, opt, batches):
    """One training step of bench_train (and of bench_parallel's mlp step, DDP or not): the next of
    the batches, zero the gradients (set to None, PyTorch's cheapest), forward, BCEWithLogitsLoss,
    backward, optimiser step."""
    loss_fn = torch.nn.BCEWithLogitsLoss()
    turn = [0]

    def step():
        x, y = batches[turn[0]]
        turn[0] = (turn[0] + 1) % len(batches)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()

    return step


def time_calls(fn, repeats, target, clock):
    inner = 1
    while True:  # warm-up and calibration: one sample takes about target seconds
        t0 = clock()
        for _ in range(inner):
            fn()
        if clock() - t0 > target or inner > (1 << 24):
            break
        inner *= 2
    samples = []
    for _ in range(repeats):
        t0 = clock()
        for _ in range(inner):
            fn()
        samples.append((clock() - t0) / inner)
    return statistics.median(samples), min(samples), max(samples)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", default="64,256,1024")
    ap.add_argument("--batch", default="32,128,1024")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--target", type=float, default=0.02)
    ap.add_argument("--wall", action="store_true")
    ap.add_argument("--same-batch", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    clock = time.perf_counter if a.wall else time.process_time
    for hidden in [int(h) for h in a.hidden.split(",")]:
        for batch in [int(b) for b in a.batch.split(",")]:
            torch.manual_seed(1000 + hidden + batch)
            net = make_mlp(hidden)
            opt = torch.optim.Adam(net.parameters(), lr=1e-3, foreach=True)  # multi-tensor: a little faster here
            batches = [(torch.randn(batch, 8), (torch.rand(batch, 1) < 0.5).float())
                       for _ in range(1 if a.same_batch else 16)]
            med, lo, hi = time_calls(make_step(net, opt, batches), a.repeats, a.target, clock)
            print("torch_train %d %d %.9g %.9g %.9g %s" % (hidden, batch, med, lo, hi, torch.__version__), flush=True)


if __name__ == "__main__":
    main()
