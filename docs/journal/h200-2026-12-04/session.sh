#!/usr/bin/env bash
# This session's device run: the recipe's tests, then the follow-up that docs/benchmarks.md asks for
# (split-K, the bias fusion and the caching pool, untimed on hardware until now).
set -uo pipefail
OUT=${OUT:-/tmp/gpucheck-out}; mkdir -p "$OUT"
t0=$(date +%s); stamp() { echo "$(( $(date +%s) - t0 )) s: $*" >> "$OUT/timeline.txt"; }
if [ -d .gl ] && command -v nvidia-smi >/dev/null; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
    icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    [ -f "$icd" ] && export VK_DRIVER_FILES=${VK_DRIVER_FILES:-$icd}
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/nvidia-smi.txt" 2>&1
fi
B=.gpucheck/bin
export MAE_DEVICE=gpu CI=true
$B/mae info > "$OUT/info.txt" 2>&1; stamp info; head -20 "$OUT/info.txt"
: > "$OUT/tests.log"
for t in $B/test-*; do
    echo "== $t" >> "$OUT/tests.log"
    timeout 100 "$t" --test-threads=1 >> "$OUT/tests.log" 2>&1; echo "== $t exit $?" >> "$OUT/tests.log"; stamp "$t"
done
grep -E '^== .* exit|test result|FAILED|panicked' "$OUT/tests.log" | head -40
timeout 60 $B/gpu_step_profile builtin:512 256 2 mae_vit_micro_patch4_32 --by-shape > "$OUT/micro-splitk.txt" 2>&1; stamp micro
head -3 "$OUT/micro-splitk.txt"
timeout 90 $B/gpu_step_profile builtin:128 64 2 mae_vit_base_patch16 --by-shape > "$OUT/base-splitk.txt" 2>&1; stamp base
head -3 "$OUT/base-splitk.txt"
timeout 100 $B/mae bench --device gpu --no-reference --kernels-only --out "$OUT/kernels.md" > /dev/null 2>> "$OUT/errors.log"; stamp kernels
timeout 100 python3 .gpucheck/torch_mae_speed.py > "$OUT/torch.txt" 2>&1; stamp torch
cat "$OUT/torch.txt" "$OUT/timeline.txt"
