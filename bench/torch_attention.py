#!/usr/bin/python3
"""PyTorch side of bench_attention: one Adam training step of a 2-block ParT-like tagger, one thread.

Usage: torch_attention.py [--repeats N] [--target SECONDS]

The model, as bench_attention builds it in tapir: 50 particles x 8 features, batch 32, padding mask
(20..50 particles per jet), a constant pairwise bias (B * 8, 50, 50) as attn_mask; Linear 8 -> 64 +
GELU per particle; two particle attention blocks (LayerNorm, nn.MultiheadAttention(64, 8) with
key_padding_mask and the bias, LayerNorm, residual; LayerNorm, Linear 64 -> 256, GELU, LayerNorm,
Linear 256 -> 64, residual); masked mean; Linear 64 -> 1; BCEWithLogitsLoss; Adam (foreach).
Timed in process CPU time: after a warm-up, the median of REPEATS samples of about TARGET seconds.
Prints: torch_attention MEDIAN_S MIN_S MAX_S TORCH_VERSION
"""
import argparse
import sys
import time

try:
    import torch
except ImportError:
    print("torch_attention: PyTorch not importable", file=sys.stderr)
    sys.exit(3)

from torch_train import time_calls  # the same calibration and sampling as bench_train's peer

B, N, F, E, H, HID = 32, 50, 8, 64, 8, 256


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1 = torch.nn.LayerNorm(E)
        self.attn = torch.nn.MultiheadAttention(E, H, batch_first=True)
        self.post_attn_norm = torch.nn.LayerNorm(E)
        self.norm2 = torch.nn.LayerNorm(E)
        self.fc1 = torch.nn.Linear(E, HID)
        self.post_fc_norm = torch.nn.LayerNorm(HID)
        self.fc2 = torch.nn.Linear(HID, E)

    def forward(self, x, pad, u):
        a = self.norm1(x)
        a = self.attn(a, a, a, key_padding_mask=pad, attn_mask=u, need_weights=False)[0]
        h = x + self.post_attn_norm(a)
        m = self.post_fc_norm(torch.nn.functional.gelu(self.fc1(self.norm2(h))))
        return h + self.fc2(m)


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(F, E)
        self.b1 = Block()
        self.b2 = Block()
        self.head = torch.nn.Linear(E, 1)

    def forward(self, x, mask, pad, u, count):
        h = torch.nn.functional.gelu(self.embed(x))
        h = self.b2(self.b1(h, pad, u), pad, u)
        return self.head((h * mask.unsqueeze(-1)).sum(1) / count)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--target", type=float, default=0.05)
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(2202)
    net = Model()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, foreach=True)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    x = torch.randn(B, N, F)
    u = 0.1 * torch.randn(B * H, N, N)
    n = torch.randint(20, N + 1, (B,))
    mask = (torch.arange(N).unsqueeze(0) < n.unsqueeze(1)).float()
    pad = mask == 0
    count = n.float().unsqueeze(1)
    y = (torch.rand(B, 1) < 0.5).float()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x, mask, pad, u, count), y)
        loss.backward()
        opt.step()

    med, lo, hi = time_calls(step, a.repeats, a.target, time.process_time)
    print("torch_attention %.9g %.9g %.9g %s" % (med, lo, hi, torch.__version__), flush=True)


if __name__ == "__main__":
    main()
