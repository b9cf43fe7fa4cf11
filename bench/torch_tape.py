#!/usr/bin/python3
"""PyTorch peer of bench_tape: one recorded op on a one-element tensor, forward plus backward.

Same workload as bench_tape.cpp: 500 (mul, add) pairs on one-element tensors with grad mode on,
then backward. Prints one line "torch_tape_op_ns <median> <min> <max>" (nanoseconds per op).
Run with /usr/bin/python3 (Debian's python3-torch), one thread.
"""
import statistics
import sys
import time

try:
    import torch
except ImportError:
    print("torch_tape: PyTorch not importable", file=sys.stderr)
    sys.exit(3)

torch.set_num_threads(1)
OPS = 1000
w = torch.tensor([0.999], requires_grad=True)


def step():
    y = torch.tensor([1.0])
    for _ in range(OPS // 2):
        y = y * w + w
    y.sum().backward()
    w.grad = None


t_end = time.perf_counter() + 0.2
while time.perf_counter() < t_end:
    step()
samples = []
for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 15):
    t0 = time.perf_counter()
    step()
    samples.append((time.perf_counter() - t0) / OPS * 1e9)
print("torch_tape_op_ns %.1f %.1f %.1f %s" % (statistics.median(samples), min(samples), max(samples), torch.__version__))
