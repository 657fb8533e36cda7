#!/usr/bin/env bash
# Second device call of 2026-12-04: the A_SUMS kernel that spreads the bias sums over the whole
# workgroup against the one measured in the first call, same session, alternated.
set -uo pipefail
OUT=${OUT:-/tmp/gpucheck-out}; mkdir -p "$OUT"
t0=$(date +%s); stamp() { echo "$(( $(date +%s) - t0 )) s: $*" >> "$OUT/timeline.txt"; }
if [ -d .gl ] && command -v nvidia-smi >/dev/null; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
    icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    [ -f "$icd" ] && export VK_DRIVER_FILES=${VK_DRIVER_FILES:-$icd}
fi
B=.gpucheck/bin
export MAE_DEVICE=gpu CI=true
$B/mae info 2>&1 | head -3
: > "$OUT/tests.log"
for t in $B/test-*; do
    echo "== $t" >> "$OUT/tests.log"
    timeout 100 "$t" --test-threads=1 >> "$OUT/tests.log" 2>&1; echo "== $t exit $?" >> "$OUT/tests.log"; stamp "$t"
done
grep -E '^== .* exit|test result|FAILED|panicked' "$OUT/tests.log" | head -40
for round in 1 2; do
  for v in old new; do
    p=$B/gpu_step_profile; [ $v = old ] && p=$B/gpu_step_profile_old
    timeout 60 $p builtin:512 256 2 mae_vit_micro_patch4_32 --by-shape > "$OUT/micro-$v-$round.txt" 2>&1; stamp micro $v $round
    timeout 60 $p builtin:128 64 2 mae_vit_base_patch16 --by-shape > "$OUT/base-$v-$round.txt" 2>&1; stamp base $v $round
    sed -n 2p "$OUT/micro-$v-$round.txt" "$OUT/base-$v-$round.txt" | sed "s/^/$v $round: /"
  done
done
timeout 100 $B/mae bench --device gpu --no-reference --kernels-only --out "$OUT/kernels.md" > /dev/null 2>> "$OUT/errors.log"; stamp kernels
grep 'weight' "$OUT/kernels.md"
cat "$OUT/timeline.txt"
