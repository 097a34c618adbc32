#!/usr/bin/env bash
# The GPU checks of issues 2, 5 (--ddp: NCCL path at world size 1 vs plain) and 7 in one script,
# for a session lent a GPU machine (`device` tool):
#   run: bash benchmarks/device_check.sh   (timeout_s 600; each step has its own cap, results land in $OUT)
# The machine has torch but no network: the project runs from the checkout via PYTHONPATH.
set -uo pipefail
export PYTHONPATH="$PWD:$PWD/tests:${PYTHONPATH:-}"
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
# 1. CUDA paths against the CPU results, and the image-cache placement (tests skip these without CUDA)
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_jaccard.py tests/test_augment.py tests/test_placement.py \
    -k "cuda" 2>&1 | tail -5 | tee "$OUT/cuda_tests.txt"
# 2. pseudo-labels on the GPU (issue 2 target: N = 32,621 under 1 s)
timeout 150 python3 benchmarks/bench_pseudo_labels.py --device cuda --sizes 12936,32621,100000 2>&1 | tee "$OUT/bench_pseudo_labels.txt"
# 3. training throughput against pure compute, epoch overhead, projected recipe, NCCL world size 1 (issues 7, 5)
timeout 220 python3 benchmarks/bench_train.py --full --ddp 2>&1 | tee "$OUT/bench_train.txt"
# 4. MSMT17-sized caches and peak memory (issue 7)
timeout 120 python3 benchmarks/bench_train.py --full --msmt --iterations 20 2>&1 | tee "$OUT/bench_train_msmt.txt"
