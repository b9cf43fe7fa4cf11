#!/usr/bin/env python3
"""PyTorch side of bench_inference's structured-layer rows: the same architectures (weights are
PyTorch's own initialisation: only the time is compared; tests/deploy/test_model.cpp checks that
tapir's deployed models equal the trained ones bit for bit), one thread, torch.inference_mode().

Usage: torch_layers.py REPEATS CLOCK   (CLOCK: "thread" for process CPU time, or "wall")

Prints one JSON object per row: name, median seconds per sample at batch 1 (or per step for the
recurrent cells) and per sample at the batched size (null where a row has no batched case), and
which PyTorch variant was fastest (the best of the module variants tried counts).
"""
import json
import sys
import time

import torch

import torch_inference  # noqa: E402 (next to this script: its median over repeats and its clock)


def median_time(fn, repeats, target=0.02):
    """torch_inference's median, with the inner loop grown until one sample takes `target` seconds."""
    fn()  # warm-up
    inner = 1
    while True:
        t0 = torch_inference.CLOCK()
        for _ in range(inner):
            fn()
        if torch_inference.CLOCK() - t0 > target or inner > (1 << 20):
            break
        inner *= 2
    return torch_inference.median_time(fn, repeats, inner)


def best(variants, repeats):
    times = {name: median_time(fn, repeats) for name, fn in variants.items()}
    name = min(times, key=times.get)
    return times[name], name


def cnn():
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(16 * 10 * 10, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1)).eval()


def main():
    torch.set_num_threads(1)
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    torch_inference.CLOCK = time.perf_counter if len(sys.argv) > 2 and sys.argv[2] == "wall" else time.process_time
    torch.manual_seed(1)
    rows = []
    with torch.inference_mode():
        # LSTM / GRU hidden 64, 8 inputs, one step with the state carried by the caller.
        x = torch.randn(1, 8)
        cell = torch.nn.LSTMCell(8, 64).eval()
        lstm = torch.nn.LSTM(8, 64, batch_first=True).eval()
        h, c = torch.zeros(1, 64), torch.zeros(1, 64)
        hc = (torch.zeros(1, 1, 64), torch.zeros(1, 1, 64))
        x3 = x.reshape(1, 1, 8)
        rows.append(("lstm64_step",) + best({"LSTMCell": lambda: cell(x, (h, c)), "LSTM": lambda: lstm(x3, hc)}, repeats) + (None,))
        gcell = torch.nn.GRUCell(8, 64).eval()
        gru = torch.nn.GRU(8, 64, batch_first=True).eval()
        h1 = torch.zeros(1, 1, 64)
        rows.append(("gru64_step",) + best({"GRUCell": lambda: gcell(x, h), "GRU": lambda: gru(x3, h1)}, repeats) + (None,))

        # The top-tagging CNN on 40 x 40 images, batch 1 and 256.
        net = cnn()
        img = torch.randn(1, 1, 40, 40)
        imgs = torch.randn(256, 1, 40, 40)
        t1, v1 = best({"eager": lambda: net(img)}, repeats)
        tb = median_time(lambda: net(imgs), repeats) / 256
        variants = {"eager": (t1, tb)}
        try:
            traced = torch.jit.freeze(torch.jit.trace(net, img))
            variants["jit.freeze"] = (median_time(lambda: traced(img), repeats), median_time(lambda: traced(imgs), repeats) / 256)
        except Exception:  # noqa: BLE001 (TorchScript is optional)
            pass
        rows.append(("cnn40", min(v[0] for v in variants.values()), min(variants, key=lambda k: variants[k][0]),
                     min(v[1] for v in variants.values())))

        # PFN on 100 particles (4 features), phi 100-100-64, F 100-1, batch 1: the per-particle
        # network as one batched product over the particles, masked sum, F.
        phi = torch.nn.Sequential(torch.nn.Linear(4, 100), torch.nn.ReLU(), torch.nn.Linear(100, 100), torch.nn.ReLU(),
                                  torch.nn.Linear(100, 64), torch.nn.ReLU()).eval()
        f = torch.nn.Sequential(torch.nn.Linear(64, 100), torch.nn.ReLU(), torch.nn.Linear(100, 1)).eval()
        parts = torch.randn(1, 100, 4)
        mask = torch.ones(1, 100, 1)

        def pfn():
            return f((phi(parts) * mask).sum(1))

        rows.append(("pfn100",) + best({"eager": pfn}, repeats) + (None,))

        # Conv1d, 64 channels in and out, kernel 3, 128 samples ('same' padding), batch 1.
        conv = torch.nn.Conv1d(64, 64, 3, padding=1).eval()
        seq = torch.randn(1, 64, 128)
        rows.append(("conv1d64",) + best({"eager": lambda: conv(seq)}, repeats) + (None,))

    for name, t1, variant, tb in rows:
        print(json.dumps({"name": name, "batch1_s": t1, "batched_s": tb, "variant": variant, "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
