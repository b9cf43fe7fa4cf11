#!/usr/bin/python3
"""PyTorch side of bench_conv: one Adam training step of the jet-image CNN, one thread.

Usage: torch_conv.py [--batch 128] [--repeats N] [--target SECONDS] [--wall] [--channels-last]

The CNN (the notes' Keras model, padding='same'): 40x40x1 images, Conv2d 8@4x4, ReLU, Conv2d 8@4x4,
ReLU, MaxPool 2, Conv2d 8@4x4, ReLU, Conv2d 8@4x4, ReLU, MaxPool 2, Flatten, Linear 800->64, ReLU,
Linear 64->1, float32. One step: zero the gradients (set to None), forward, BCEWithLogitsLoss,
backward, torch.optim.Adam (lr 1e-3, foreach) step, as bench_conv does for tapir. Timed in process
CPU time (or wall time with --wall): after a warm-up, the median of REPEATS samples of about TARGET
seconds each. With --channels-last the model and batch use torch.channels_last (the faster memory
format for some CPU convolutions); bench_conv runs both and takes the faster. Prints:
    torch_conv BATCH FORMAT MEDIAN_S MIN_S MAX_S TORCH_VERSION
"""
import argparse
import sys
import time

try:
    import torch
except ImportError:
    print("torch_conv: PyTorch not importable", file=sys.stderr)
    sys.exit(3)

from torch_train import time_calls  # noqa: E402 (bench_train's peer: the same warm-up, calibration and samples)


def make_cnn():
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 8, 4, padding='same'), nn.ReLU(),
        nn.Conv2d(8, 8, 4, padding='same'), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 4, padding='same'), nn.ReLU(),
        nn.Conv2d(8, 8, 4, padding='same'), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(800, 64), nn.ReLU(), nn.Linear(64, 1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--target", type=float, default=0.2)
    ap.add_argument("--wall", action="store_true")
    ap.add_argument("--channels-last", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    clock = time.perf_counter if a.wall else time.process_time
    torch.manual_seed(1234)
    net = make_cnn()
    x = torch.rand(a.batch, 1, 40, 40)
    y = (torch.rand(a.batch, 1) < 0.5).float()
    fmt = "contiguous"
    if a.channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
        fmt = "channels_last"
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, foreach=True)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()

    med, lo, hi = time_calls(step, a.repeats, a.target, clock)
    print("torch_conv %d %s %.9g %.9g %.9g %s" % (a.batch, fmt, med, lo, hi, torch.__version__), flush=True)


if __name__ == "__main__":
    main()
