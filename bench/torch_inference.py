#!/usr/bin/env python3
"""PyTorch side of bench_inference: the same MLPs, weights and events, timed on one thread.

Usage: torch_inference.py MANIFEST.json

The manifest (written by bench_inference) lists models: sizes, activations, a file of float32
weights (per layer: W as (in, out) row-major, then b), a file of float32 events (n x inputs), a
file to write PyTorch's outputs to (bench_inference compares them with tapir's), and the number
of timing repeats, and the clock ("thread": CPU time, as bench_inference measures by default,
here of the whole process so that any helper thread of a BLAS library counts; or "wall").
bench_inference runs this with OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 (torch.set_num_threads(1)
does not reach OpenBLAS's own thread pool). Prints one JSON object per model: median seconds per
event at batch 1 (a loop of single-event calls) and in one batch of all events, in
torch.inference_mode(), and how many OS threads the process had at the end.
"""
import array
import json
import os
import sys
import time

import torch


def build(model):
    sizes, acts = model["sizes"], model["activations"]
    raw = open(model["weights"], "rb").read()
    flat = torch.frombuffer(bytearray(raw), dtype=torch.float32)
    layers, at = [], 0
    for i in range(len(sizes) - 1):
        n_in, n_out = sizes[i], sizes[i + 1]
        lin = torch.nn.Linear(n_in, n_out)
        w = flat[at:at + n_in * n_out].reshape(n_in, n_out)
        at += n_in * n_out
        b = flat[at:at + n_out]
        at += n_out
        with torch.no_grad():
            lin.weight.copy_(w.t())  # nn.Linear stores (out, in)
            lin.bias.copy_(b)
        layers.append(lin)
        act = acts[i]
        if act == "relu":
            layers.append(torch.nn.ReLU())
        elif act == "sigmoid":
            layers.append(torch.nn.Sigmoid())
        elif act == "tanh":
            layers.append(torch.nn.Tanh())
        elif act != "linear":
            raise ValueError("unsupported activation " + act)
    if at != flat.numel():
        raise ValueError("weights file has %d floats, the model needs %d" % (flat.numel(), at))
    return torch.nn.Sequential(*layers).eval()


CLOCK = time.process_time


def median_time(fn, repeats, inner):
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        t0 = CLOCK()
        for _ in range(inner):
            fn()
        samples.append((CLOCK() - t0) / inner)
    samples.sort()
    return samples[len(samples) // 2]


def main():
    global CLOCK
    torch.set_num_threads(1)
    manifest = json.load(open(sys.argv[1]))
    CLOCK = time.perf_counter if manifest.get("clock") == "wall" else time.process_time
    for model in manifest["models"]:
        net = build(model)
        n_in = model["sizes"][0]
        x = torch.frombuffer(bytearray(open(model["events"], "rb").read()), dtype=torch.float32).reshape(-1, n_in)
        n = x.shape[0]
        repeats = int(manifest.get("repeats", 15))
        rows = [x[i:i + 1] for i in range(n)]
        with torch.inference_mode():
            y = net(x).contiguous()
            open(model["outputs"], "wb").write(array.array("f", y.flatten().tolist()).tobytes())
            k = min(n, int(model.get("batch1_calls", 256)))

            def batch1():
                for r in rows[:k]:
                    net(r)

            t1 = median_time(batch1, repeats, 1) / k
            tb = median_time(lambda: net(x), repeats, 1) / n
        try:
            os_threads = len(os.listdir("/proc/self/task"))
        except OSError:
            os_threads = 0
        print(json.dumps({"name": model["name"], "batch1_s": t1, "batched_s": tb, "batch": n,
                          "torch": torch.__version__, "threads": torch.get_num_threads(), "os_threads": os_threads}), flush=True)


if __name__ == "__main__":
    main()
