#!/usr/bin/python3
"""PyTorch side of bench_recurrent: one Adam training step of an LSTM or GRU classifier, one thread.

Usage: torch_recurrent.py [--cells lstm,gru] [--steps 20] [--features 7] [--hidden 64] [--batch 128]
                          [--repeats N] [--target SECONDS] [--wall]

The model: torch.nn.LSTM or GRU (batch_first, one layer) over (BATCH, STEPS, FEATURES), its last
hidden state into Linear(HIDDEN, 1) (a logit), float32. One step: zero the gradients (set to None),
forward, BCEWithLogitsLoss, backward, torch.optim.Adam (lr 1e-3, foreach) step, as bench_recurrent
does for tapir. Timed in process CPU time (or wall time with --wall): after a warm-up, the median
of REPEATS samples of about TARGET seconds each. Prints one line per cell:
    torch_recurrent CELL MEDIAN_S MIN_S MAX_S TORCH_VERSION
"""
import argparse
import sys
import time

try:
    import torch
except ImportError:
    print("torch_recurrent: PyTorch not importable", file=sys.stderr)
    sys.exit(3)

from torch_train import time_calls  # bench/torch_train.py: warm-up, calibration, median of samples


class Classifier(torch.nn.Module):
    def __init__(self, cell, features, hidden):
        super().__init__()
        rnn = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
        self.rnn = rnn(features, hidden, batch_first=True)
        self.head = torch.nn.Linear(hidden, 1)

    def forward(self, x):
        _, h = self.rnn(x)
        if isinstance(h, tuple):
            h = h[0]
        return self.head(h[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", default="lstm,gru")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--features", type=int, default=7)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--target", type=float, default=0.02)
    ap.add_argument("--wall", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    clock = time.perf_counter if a.wall else time.process_time
    for cell in a.cells.split(","):
        torch.manual_seed(7)
        net = Classifier(cell, a.features, a.hidden)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, foreach=True)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        x = torch.randn(a.batch, a.steps, a.features)
        y = (torch.rand(a.batch, 1) < 0.5).float()

        def step():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()

        med, lo, hi = time_calls(step, a.repeats, a.target, clock)
        print("torch_recurrent %s %.9g %.9g %.9g %s" % (cell, med, lo, hi, torch.__version__), flush=True)


if __name__ == "__main__":
    main()
