"""PyTorch's training speed for an MAE of a given configuration: `mae bench --compare-torch PYTHON`
writes this file to a temporary folder and runs it with that interpreter, so that our images/s and
PyTorch's are measured in one session on the same model, batch, mask ratio and device.

The model is the official `models_mae.py` architecture (Conv2d patch embedding, pre-norm blocks,
fused qkv, decoder with mask tokens, norm-pix loss), synthetic inputs, AdamW (0.9, 0.95), fp32, or
the forward and backward under `torch.autocast(dtype=torch.bfloat16)` with `--autocast bf16` (what
`main_pretrain.py` does with fp16 on a GPU; on a CPU, oneDNN's bf16 products): the yardstick for our
bf16 products.
It prints one line: `images/s <rate> step_ms <ms> max_rss_mib <MiB> torch <version> threads <n>`.

usage: python3 bench_torch.py --config IMG,PATCH,CHANS,DIM,DEPTH,HEADS,DDIM,DDEPTH,DHEADS,MLP
                              [--norm-pix 0|1] [--batch N] [--ratio R] [--steps N] [--warmup N]
                              [--device cpu|cuda] [--threads N] [--autocast none|bf16]
"""
import argparse, resource, sys, time

import torch, torch.nn as nn, torch.nn.functional as F


class Block(nn.Module):
    def __init__(s, d, h, mlp):
        super().__init__(); s.h = h
        s.n1, s.n2 = nn.LayerNorm(d, eps=1e-6), nn.LayerNorm(d, eps=1e-6)
        s.qkv, s.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        s.fc1, s.fc2 = nn.Linear(d, mlp * d), nn.Linear(mlp * d, d)

    def forward(s, x):
        B, N, C = x.shape
        q, k, v = s.qkv(s.n1(x)).reshape(B, N, 3, s.h, C // s.h).permute(2, 0, 3, 1, 4)
        x = x + s.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C))
        return x + s.fc2(F.gelu(s.fc1(s.n2(x))))


class MAE(nn.Module):
    def __init__(s, img, p, c, d, depth, h, dd, ddepth, dh, mlp, norm_pix):
        super().__init__(); s.p, s.c, s.L, s.norm_pix = p, c, (img // p) ** 2, norm_pix
        s.patch = nn.Conv2d(c, d, p, p); s.cls = nn.Parameter(torch.zeros(1, 1, d))
        s.pos = nn.Parameter(torch.zeros(1, s.L + 1, d), requires_grad=False)
        s.blocks = nn.ModuleList(Block(d, h, mlp) for _ in range(depth)); s.norm = nn.LayerNorm(d, eps=1e-6)
        s.dembed = nn.Linear(d, dd); s.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        s.dpos = nn.Parameter(torch.zeros(1, s.L + 1, dd), requires_grad=False)
        s.dblocks = nn.ModuleList(Block(dd, dh, mlp) for _ in range(ddepth)); s.dnorm = nn.LayerNorm(dd, eps=1e-6)
        s.pred = nn.Linear(dd, p * p * c)

    def patchify(s, x):
        B, g = x.shape[0], x.shape[2] // s.p
        return x.reshape(B, s.c, g, s.p, g, s.p).permute(0, 2, 4, 3, 5, 1).reshape(B, g * g, -1)

    def forward(s, x, ratio):
        t = s.patch(x).flatten(2).transpose(1, 2) + s.pos[:, 1:]
        B, L, D = t.shape; keep = int(L * (1 - ratio))
        ids = torch.rand(B, L, device=x.device).argsort(1); restore = ids.argsort(1)
        t = torch.gather(t, 1, ids[:, :keep, None].expand(-1, -1, D))
        mask = torch.ones(B, L, device=x.device); mask[:, :keep] = 0; mask = torch.gather(mask, 1, restore)
        t = torch.cat([(s.cls + s.pos[:, :1]).expand(B, -1, -1), t], 1)
        for b in s.blocks: t = b(t)
        y = s.dembed(s.norm(t)); Dd = y.shape[2]
        toks = torch.cat([y[:, 1:], s.mask_token.expand(B, L - keep, -1)], 1)
        toks = torch.gather(toks, 1, restore[:, :, None].expand(-1, -1, Dd))
        y = torch.cat([y[:, :1], toks], 1) + s.dpos
        for b in s.dblocks: y = b(y)
        pred = s.pred(s.dnorm(y))[:, 1:]
        tgt = s.patchify(x)
        if s.norm_pix:
            mu, var = tgt.mean(-1, keepdim=True), tgt.var(-1, keepdim=True)
            tgt = (tgt - mu) / (var + 1e-6) ** .5
        loss = ((pred - tgt) ** 2).mean(-1)
        # With ratio 0 nothing is removed: the loss is over every patch (our convention too).
        return (loss * mask).sum() / mask.sum() if ratio > 0 else loss.mean()


def peak_rss_mib():
    """This process's peak resident memory. VmHWM where Linux has it: ru_maxrss would include the
    peak of the parent that exec'd us (Linux carries it over exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, bytes on macOS


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--norm-pix", type=int, default=1)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--ratio", type=float, default=0.75)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--autocast", choices=["none", "bf16"], default="none")
    a = ap.parse_args()
    img, p, c, d, depth, h, dd, ddepth, dh, mlp = (int(v) for v in a.config.split(","))
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    torch.backends.cuda.matmul.allow_tf32 = False; torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    m = MAE(img, p, c, d, depth, h, dd, ddepth, dh, mlp, bool(a.norm_pix)).to(dev)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, betas=(.9, .95), weight_decay=.05)
    x = torch.randn(a.batch, c, img, img, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.autocast == "bf16"):
            loss = m(x, a.ratio)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()

    for _ in range(a.warmup): step()
    # The median step, as `mae bench` takes the median of its steps.
    times = []
    for _ in range(a.steps):
        sync(); t = time.perf_counter(); step(); sync(); times.append(time.perf_counter() - t)
    times.sort(); dt = times[len(times) // 2]
    rss_mib = peak_rss_mib()
    print(f"images/s {a.batch / dt:.3f} step_ms {dt * 1e3:.1f} max_rss_mib {rss_mib:.0f} "
          f"torch {torch.__version__} threads {torch.get_num_threads()}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
