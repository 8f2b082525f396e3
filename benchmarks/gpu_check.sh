#!/usr/bin/env bash
# One command for a GPU box (H100/H200; python3 with torch, CuPy, numba-cuda; no
# network needed): the GPU test suite on the device, then the table of every GPU
# kernel path (GB/s, % of a device-to-device copy, vs torch.nn.functional).
#
#   benchmarks/gpu_check.sh OUTDIR [--quick] [extra benchmarks/gpu_check.py options]
#
# Writes into OUTDIR: gpu_check.json (raw numbers), table.txt, test_cuda.log,
# nvidia-smi.txt, env.txt. Finishes in under 8 minutes (each step has a time limit).
# Exit status: 0 when the tests passed and every case ran, 1 otherwise.
set -uo pipefail

usage() { echo "usage: $0 OUTDIR [--quick] [gpu_check.py options]" >&2; exit 2; }
[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage ;; -*) usage ;; esac
OUT=$1
shift
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
PY=${PYTHON:-python3}

# the real device, never the simulator; fastmle from this checkout
unset NUMBA_ENABLE_CUDASIM FASTMLE_CUDASIM
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1

{
  date -u +%Y-%m-%dT%H:%M:%SZ
  git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo "no git"
  "$PY" - <<'PYEOF'
import importlib.metadata as md, platform
print("python", platform.python_version())
for p in ("numba", "numba-cuda", "numpy", "torch", "cupy-cuda12x", "cupy-cuda13x", "jax",
          "cuda-bindings", "pytest"):
    try:
        print(p, md.version(p))
    except md.PackageNotFoundError:
        pass
PYEOF
} > "$OUT/env.txt" 2>&1
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || echo "nvidia-smi failed" >&2

status=0
echo "== tests/test_cuda.py on the device (limit 210 s) =="
timeout 210 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/test_cuda.log"
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ]; then
  echo "tests/test_cuda.py failed (exit $rc): see $OUT/test_cuda.log" >&2
  status=1
fi

echo "== benchmarks/gpu_check.py (limit 240 s) =="
timeout 240 "$PY" benchmarks/gpu_check.py "$OUT" --budget-s 180 "$@" 2>&1 | tee "$OUT/table.txt"
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ]; then
  echo "gpu_check.py exited $rc (partial numbers, if any, in $OUT/gpu_check.json)" >&2
  status=1
fi
echo "results in $OUT"
exit $status
