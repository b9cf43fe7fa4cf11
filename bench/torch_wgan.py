#!/usr/bin/python3
"""PyTorch side of bench_wgan: the WGAN-GP step of examples/wgan_gp (5 critic steps + 1 generator step), one thread.

Usage: torch_wgan.py [--repeats N] [--target SECONDS] [--wall]

Generator 16 -> 512 -> 1024 -> 512 -> 18, critic 18 -> 512 -> 512 -> 512 -> 1, ReLU, float32,
batch 128. Each critic step: a random batch from a pool of 4096 uniform events, fakes from the
generator without grad, interpolates with a ~ U[0, 1] per event, the critic's input gradient by
torch.autograd.grad(create_graph=True), penalty 10 * mean((sqrt(|g|^2 + 1e-12) - 1)^2), loss
<C(fake)> - <C(real)> + penalty, backward, Adam step (lr 1e-4, betas (0.5, 0.9), foreach).
Generator step: loss -<C(G(z))>. As bench_wgan does for tapir. Timed in process CPU time
(or wall with --wall): median of REPEATS samples of about TARGET seconds after a warm-up.
Prints "torch_wgan MEDIAN_S MIN_S MAX_S TORCH_VERSION" (seconds per 5+1 step).
"""
import argparse
import statistics
import sys
import time

try:
    import torch
except ImportError:
    print("torch_wgan: PyTorch not importable", file=sys.stderr)
    sys.exit(3)

BATCH, LATENT, FEATURES, POOL, N_CRITIC, GP = 128, 16, 18, 4096, 5, 10.0


def mlp(sizes):
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i + 2 < len(sizes):
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def make_step(gen, critic, opt_g, opt_c, pool, batch, critic_for_gen=None):
    """One WGAN-GP step (5 critic steps + 1 generator step) on `batch` events. Under
    DistributedDataParallel (bench_parallel's wgan step) gen and critic are the DDP modules and
    critic_for_gen the critic's own module: the generator step then computes the critic's
    gradients without all-reducing them, as on one process."""
    critic_for_gen = critic if critic_for_gen is None else critic_for_gen

    def step():
        for _ in range(N_CRITIC):
            real = pool[torch.randint(0, POOL, (batch,))]
            z = torch.randn(batch, LATENT)
            with torch.no_grad():
                fake = gen(z)
            alpha = torch.rand(batch, 1)
            xhat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
            d_real = critic(real)
            d_fake = critic(fake)
            g, = torch.autograd.grad(critic(xhat).sum(), xhat, create_graph=True)
            gp = ((g.square().sum(1) + 1e-12).sqrt() - 1).square().mean()
            loss = d_fake.mean() - d_real.mean() + GP * gp
            opt_c.zero_grad(set_to_none=True)
            loss.backward()
            opt_c.step()
        z = torch.randn(batch, LATENT)
        opt_g.zero_grad(set_to_none=True)
        loss_g = -critic_for_gen(gen(z)).mean()
        loss_g.backward()
        opt_g.step()

    return step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--target", type=float, default=0.2)
    ap.add_argument("--wall", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(2002)
    clock = time.perf_counter if a.wall else time.process_time
    gen = mlp([LATENT, 512, 1024, 512, FEATURES])
    critic = mlp([FEATURES, 512, 512, 512, 1])
    opt_g = torch.optim.Adam(gen.parameters(), lr=1e-4, betas=(0.5, 0.9), foreach=True)
    opt_c = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.5, 0.9), foreach=True)
    pool = torch.rand(POOL, FEATURES)

    step = make_step(gen, critic, opt_g, opt_c, pool, BATCH)

    inner = 1
    while True:  # warm-up and calibration
        t0 = clock()
        for _ in range(inner):
            step()
        if clock() - t0 > a.target:
            break
        inner *= 2
    samples = []
    for _ in range(a.repeats):
        t0 = clock()
        for _ in range(inner):
            step()
        samples.append((clock() - t0) / inner)
    print("torch_wgan %.9g %.9g %.9g %s" % (statistics.median(samples), min(samples), max(samples), torch.__version__), flush=True)


if __name__ == "__main__":
    main()
