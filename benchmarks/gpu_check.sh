#!/bin/bash
# Everything a GPU session checks, in one command (about 7 minutes on an H100):
#   bash benchmarks/gpu_check.sh [OUT_DIR]
# 1. the CUDA tests (the ones that skip without a device, and the training/precision tests
#    that also run on CuPy); 2. benchmarks/profile_gpu.py (where the step goes); 3. bench_step
#    against PyTorch on the same GPU in fp32, tf32 and fp16; 4. the step against the batch size
#    (128 to 2048: where it stops being bound by the host). Logs go to OUT_DIR (default
#    gpu-check/); each part has its own time limit, so one hang does not cost the rest.
# The full recipe is a separate, longer job: `python train_cifar.py --backend cupy --out RUN`,
# stopped with `timeout SECONDS ...` (SIGTERM, like Ctrl-C: it saves) and continued with `--resume RUN`. For the
# 20-minute target, `--epochs 2000 --time-budget 18.5` trains as many epochs as fit in 18.5 min
# (training, validation, checkpoints), leaving the rest for loading the data and the final test;
# benchmarks/gpu_session.sh starts that run across device calls and benchmarks after it.
cd "$(dirname "$0")/.." || exit 1
OUT_DIR=${1:-gpu-check}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__)"
} > "$OUT_DIR/env.txt" 2>&1
timeout 300 $PY -m pytest -q -rs -p no:cacheprovider tests/test_kernels_cupy.py \
  tests/test_conv_models_cupy.py tests/test_backend_and_reference.py tests/test_train.py \
  tests/test_precision.py tests/test_optim.py tests/test_cupy_paths.py > "$OUT_DIR/tests_cuda.log" 2>&1
echo "CUDA tests: $(tail -1 "$OUT_DIR/tests_cuda.log")"
timeout 150 $PY benchmarks/profile_gpu.py --steps 20 > "$OUT_DIR/profile_gpu.log" 2>&1
head -4 "$OUT_DIR/profile_gpu.log"
for p in fp32 tf32 fp16; do
  timeout 120 $PY benchmarks/bench_step.py --backend cupy --batch 512 --precision $p \
    --repeats 3 --steps 20 --min-s 2 > "$OUT_DIR/bench_$p.log" 2>&1
  echo "bench_step $p:"; grep "^| minivit\|^| torch" "$OUT_DIR/bench_$p.log"
done
timeout 200 $PY benchmarks/bench_step.py --backend cupy --scaling --batches 128,512,2048 \
  --patches 4 --repeats 2 --steps 10 --min-s 1 > "$OUT_DIR/scaling.log" 2>&1
echo "scaling:"; grep "^| [0-9]" "$OUT_DIR/scaling.log"
