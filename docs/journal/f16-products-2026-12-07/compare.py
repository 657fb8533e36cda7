"""The loss-curve figures of ../f16-products-2026-12-07.md from the four logs beside this file:
final loss (mean of the last 100 steps), mean |difference| of two curves over windows of 1, 10
and 100 steps, and the mean loss per 500 steps. Run: python3 compare.py"""
import csv
import os

here = os.path.dirname(os.path.abspath(__file__))
runs = {r: [float(row['loss']) for row in csv.DictReader(open(os.path.join(here, f'{r}.loss.csv')))]
        for r in ['f32_s0', 'f32_s1', 'f16_s0', 'f16_s1']}


def window_means(losses, w):
    return [sum(losses[i:i + w]) / w for i in range(0, len(losses) - w + 1, w)]


def mean_abs_difference(a, b, w):
    x, y = window_means(runs[a], w), window_means(runs[b], w)
    return sum(abs(p - q) for p, q in zip(x, y)) / len(x)


for r, losses in runs.items():
    print(f'{r}: final loss (mean of the last 100 steps) {sum(losses[-100:]) / 100:.4f}')
pairs = [('f16_s0', 'f32_s0'), ('f16_s1', 'f32_s1'), ('f32_s1', 'f32_s0'), ('f16_s1', 'f16_s0')]
print('| window | ' + ' | '.join(f'{a} - {b}' for a, b in pairs) + ' |')
for w in [1, 10, 100]:
    print(f'| {w} | ' + ' | '.join(f'{mean_abs_difference(a, b, w):.4f}' for a, b in pairs) + ' |')
print('| steps | ' + ' | '.join(runs) + ' |')
for i in range(0, 3000, 500):
    print(f'| {i + 1} - {i + 500} | ' + ' | '.join(f'{sum(l[i:i + 500]) / 500:.4f}' for l in runs.values()) + ' |')
