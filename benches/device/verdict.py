"""Issue 42's five targets, read off one device run's outputs (the on-device script's $OUT):
torch.txt (PyTorch on the same GPU) and the step profiles profile-micro-f32.txt, profile-base-f32.txt and
profile-base-f16.txt (mae/examples/gpu_step_profile.rs, the base ones --by-shape). Prints a markdown table,
one row per target with what was measured, what it needs and whether it holds; a missing file gives
"not measured" for the rows that need it. Standard library only (it runs on the device machine).
usage: python3 verdict.py OUT_DIR"""
import os, re, sys


def read(out, name):
    try:
        with open(os.path.join(out, name)) as f:
            return f.read()
    except OSError:
        return None


def torch_rate(text, preset, arithmetic):
    """PyTorch's images/s for a preset ('micro32', 'base') and arithmetic ('fp32', 'bf16')."""
    for line in (text or "").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 7 and cells[1] == preset and cells[3].startswith(arithmetic):
            return float(cells[6])
    return None


def profile(text):
    """What a step profile says: images/s, host share (%), products' TFLOP/s, attention's share of
    the kernel time (%, from the by-shape rows: attention's entry points carry HEAD_DIM)."""
    if not text:
        return None
    number = lambda pattern: (lambda m: float(m.group(1)) if m else None)(re.search(pattern, text))
    attention = 0.0
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and "HEAD_DIM=" in cells[0] and cells[3].endswith("%"):
            attention += float(cells[3].rstrip("%"))
    return {
        "images": number(r"wall clock, unprofiled: [\d.]+ ms per step, ([\d.]+) images/s"),
        "host": number(r"wall clock minus kernel time: [\d.]+ ms, ([\d.]+)% of the wall clock"),
        "tflops": number(r"products: .*: ([\d.]+) TFLOP/s"),
        "attention": attention if "HEAD_DIM=" in text else None,
    }


def main(out):
    torch = read(out, "torch.txt")
    micro, base, base16 = (profile(read(out, f)) for f in
                           ("profile-micro-f32.txt", "profile-base-f32.txt", "profile-base-f16.txt"))
    get = lambda p, k: p and p.get(k)
    rows = []

    def row(target, measured, needed, holds):
        verdict = "not measured" if holds is None else ("**holds**" if holds else "falls short")
        rows.append(f"| {target} | {measured} | {needed} | {verdict} |")

    def at_least(what, ours, theirs, factor=1.0):
        if ours is None or theirs is None:
            row(what, "-", f">= {factor:g}x", None)
        else:
            row(what, f"{ours:.0f} images/s, {ours / theirs:.2f}x PyTorch's {theirs:.0f}",
                f">= {factor:g}x", ours >= factor * theirs)

    at_least("1. micro32, batch 256, f32 against PyTorch fp32", get(micro, "images"), torch_rate(torch, "micro32", "fp32"))
    at_least("2. base, batch 64, f32 against PyTorch fp32", get(base, "images"), torch_rate(torch, "base", "fp32"))
    at_least("2. base, batch 64, f16 tensor cores against PyTorch bf16 autocast", get(base16, "images"),
             torch_rate(torch, "base", "bf16"), 0.7)
    for name, p in (("micro32", micro), ("base f32", base), ("base f16", base16)):
        host = get(p, "host")
        row(f"3. host share of the step, {name}", "-" if host is None else f"{host:.0f}%", "<= 15%",
            None if host is None else host <= 15)
    share = get(base, "attention")
    row("4. attention's share of the base step's kernel time (f32)", "-" if share is None else f"{share:.1f}%",
        "<= 15%", None if share is None else share <= 15)
    for name, p, needed in (("f32", base, 35), ("f16", base16, 150)):
        rate = get(p, "tflops")
        row(f"5. the base step's {name} products", "-" if rate is None else f"{rate:.1f} TFLOP/s", f">= {needed} TFLOP/s",
            None if rate is None else rate >= needed)
    print("| issue 42's target | measured | needs | verdict |\n|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("OUT", "/tmp/gpucheck-out"))
