#!/usr/bin/python3
"""PyTorch side of bench_sets: one Adam training step of a Particle Flow Network and of an EdgeConv
block, one thread, float32, as bench_sets does for tapir.

Usage: torch_sets.py [--repeats N] [--target SECONDS] [--wall]

pfn: 128 events of up to 100 particles x 4 features, a (B, N) mask (20 to 100 real particles);
Phi = Linear+ReLU 4-100-100-64 on every particle, the masked sum, F = 64-100-100-1, BCEWithLogitsLoss.
edgeconv: 32 events of up to 100 particles (20 to 100 real), 2 coordinates and 7 features; the 16
nearest real neighbours (pairwise distances, topk; padded points shifted far away as in ParticleNet's
reference code), edge features (x_i, x_j - x_i), edge network Linear+ReLU 14-64-64-64, mean over the
neighbours, linear shortcut, ReLU, mask; then the masked mean, Linear 64-1, BCEWithLogitsLoss.
Timed as torch_train.py. Prints: torch_sets NAME MEDIAN_S MIN_S MAX_S TORCH_VERSION
"""
import argparse
import sys
import time

try:
    import torch
except ImportError:
    print("torch_sets: PyTorch not importable", file=sys.stderr)
    sys.exit(3)

from torch_train import time_calls  # the same timing as bench_train's peer (this script's folder is on sys.path)


def masks(b, n, g):
    lengths = torch.randint(20, n + 1, (b,), generator=g)
    return (torch.arange(n).unsqueeze(0) < lengths.unsqueeze(1)).float()


def pfn_step():
    g = torch.Generator().manual_seed(1)
    B, N = 128, 100
    L = torch.nn.Linear
    phi = torch.nn.Sequential(L(4, 100), torch.nn.ReLU(), L(100, 100), torch.nn.ReLU(), L(100, 64), torch.nn.ReLU())
    f = torch.nn.Sequential(L(64, 100), torch.nn.ReLU(), L(100, 100), torch.nn.ReLU(), L(100, 1))
    params = list(phi.parameters()) + list(f.parameters())
    opt = torch.optim.Adam(params, lr=1e-3, foreach=True)
    x = torch.randn(B, N, 4, generator=g)
    m = masks(B, N, g)
    y = (torch.rand(B, 1, generator=g) < 0.5).float()
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        h = (phi(x) * m.unsqueeze(-1)).sum(1)
        loss_fn(f(h), y).backward()
        opt.step()
    return step


def edgeconv_step():
    g = torch.Generator().manual_seed(2)
    B, N, F, K = 32, 100, 7, 16
    L = torch.nn.Linear
    edge = torch.nn.Sequential(L(2 * F, 64), torch.nn.ReLU(), L(64, 64), torch.nn.ReLU(), L(64, 64), torch.nn.ReLU())
    shortcut = L(F, 64)
    head = L(64, 1)
    params = list(edge.parameters()) + list(shortcut.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=1e-3, foreach=True)
    pts = torch.randn(B, N, 2, generator=g)
    x = torch.randn(B, N, F, generator=g)
    m = masks(B, N, g)
    y = (torch.rand(B, 1, generator=g) < 0.5).float()
    loss_fn = torch.nn.BCEWithLogitsLoss()
    batch = torch.arange(B).view(B, 1, 1)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            p = pts + (1 - m.unsqueeze(-1)) * 1e9  # padded points far away (ParticleNet's coord_shift)
            d = torch.cdist(p, p)
            idx = d.topk(K + 1, dim=-1, largest=False)[1][:, :, 1:]  # drop the point itself
        xj = x[batch, idx]                                 # (B, N, K, F)
        xi = x.unsqueeze(2).expand(-1, -1, K, -1)
        h = edge(torch.cat([xi, xj - xi], -1)).mean(2)     # (B, N, 64)
        out = torch.relu(h + shortcut(x)) * m.unsqueeze(-1)
        pooled = out.sum(1) / m.sum(1, keepdim=True)
        loss_fn(head(pooled), y).backward()
        opt.step()
    return step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--target", type=float, default=0.02)
    ap.add_argument("--wall", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    clock = time.perf_counter if a.wall else time.process_time
    for name, make in (("pfn", pfn_step), ("edgeconv", edgeconv_step)):
        med, lo, hi = time_calls(make(), a.repeats, a.target, clock)
        print("torch_sets %s %.9g %.9g %.9g %s" % (name, med, lo, hi, torch.__version__), flush=True)


if __name__ == "__main__":
    main()
