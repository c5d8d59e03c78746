#!/usr/bin/env bash
# One prepared check on a CUDA machine: the device-marked tests, the README's default
# compare on the GPU, and the throughput benchmark. Output goes to $OUT (default ./device-out).
# Expects the project's non-PyTorch dependencies either installed or as wheels in .whl/,
# and the MNIST test set / notMNIST / Fashion-MNIST test files under $UQBENCH_DATA.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$repo/device-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 UQBENCH_NO_DOWNLOAD=1 MPLBACKEND=Agg
site=/tmp/uqbench-site
if ls "$repo"/.whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" "$repo"/.whl/*.whl
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" "$repo"
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
cd /tmp  # keep the source folder off sys.path: the installed copy maps baselines/ and evaluation/
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"
timeout 150 python3 -m pytest -q -p no:cacheprovider -m device "$repo/tests/test_device.py" 2>&1 | tee "$OUT/device_tests.txt"
start=$(date +%s)
python3 -m uqbench.app.cli compare --methods hypergan,mcdropout --device cuda --out "$OUT/compare" \
    > "$OUT/compare.txt" 2>&1
echo "compare wall: $(( $(date +%s) - start )) s" | tee -a "$OUT/compare.txt"
tail -30 "$OUT/compare.txt"
PYTHONPATH="$PYTHONPATH:$repo" timeout 200 python3 -m benchmarks.throughput --json > "$OUT/throughput.txt" 2>&1 || true
tail -25 "$OUT/throughput.txt"
cp "$OUT/compare/table.md" "$OUT/compare_table.md" 2>/dev/null || true
