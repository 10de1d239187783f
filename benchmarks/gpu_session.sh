#!/bin/bash
# A GPU session's 20-minute run in device calls of at most 10 minutes (the run goes on in its
# own process session between them), then the step benchmarks on the quiet GPU:
#   bash benchmarks/gpu_session.sh start [BUDGET_MIN]   # data, guard tests, launch (~3 min)
#   bash benchmarks/gpu_session.sh wait SECONDS         # wait for the run, copy its files
#   bash benchmarks/gpu_session.sh bench SECONDS        # bench_step fp32/tf32/fp16 at 512
# start: builds CIFAR-10 from the offline copy (DATA_SRC: .data/ carried with the tree, else
# shared/data/cifar10 or ../shared/data/cifar10) into $MINIVIT_DATA; runs the CUDA tests the run
# relies on (the fused kernels and augmentation, the transposed batched GEMM); if one fails, the
# run uses MINIVIT_FUSED=0 (the plain xp path, ~4x the launches) and says so; then starts
# `train_cifar.py $TRAIN_ARGS --time-budget BUDGET_MIN` (default 18.5: the rest of the 20 min is
# for loading the data and the final test) with setsid, its output in $RUN/train.log.
# wait: returns when the run has ended or SECONDS have passed; copies log.jsonl, summary.json,
# train.log and best.npz to $OUT. bench: only once the run has ended (a shared GPU would bias both
# the run's pace and the ratios). A second start while the run goes on is refused; a run that
# stopped on this machine (killed, or an error) is resumed by the next start. The whole CUDA suite and the
# profile: benchmarks/gpu_check.sh.
cd "$(dirname "$0")/.." || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export MINIVIT_DATA=${MINIVIT_DATA:-/root/.cache/minivit}
RUN=${RUN:-/root/run}; OUT=${OUT:-$RUN/out}; PY=${PYTHON:-python3}
TRAIN_ARGS=${TRAIN_ARGS:-"--backend cupy --epochs 2000 --seed 0 --no-progress"}
T0=$(date +%s)
left() { echo $(( $1 - ($(date +%s) - T0) )); }
mkdir -p "$RUN" "$OUT"

start() {
  if [ -f "$RUN/START" ] && [ ! -f "$RUN/END" ]; then
    echo "a run started in $RUN at $(cat "$RUN/START") is still going: use wait"; exit 1
  fi
  rm -f "$RUN/START" "$RUN/END" "$RUN/RC"
  { date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    $PY -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__)"
    git log --oneline -1; } > "$OUT/env.txt" 2>&1
  cat "$OUT/env.txt"
  local src
  for src in "$DATA_SRC" .data shared/data/cifar10 ../shared/data/cifar10 ""; do
    [ -n "$src" ] && [ -f "$src/build.py" ] && break
  done
  if [ -z "$src" ]; then
    echo "no CIFAR-10 source: carry .data (a copy of shared/data/cifar10) or set DATA_SRC" \
      "(tried ${DATA_SRC:+$DATA_SRC, }.data, shared/data/cifar10, ../shared/data/cifar10)"
    exit 1
  fi
  $PY "$src/build.py" "$MINIVIT_DATA" > "$OUT/build.log" 2>&1 || { tail "$OUT/build.log"; exit 1; }
  echo "data from $src in $(( $(date +%s) - T0 )) s"
  timeout 300 $PY -m pytest -q -rs -p no:cacheprovider tests/test_cupy_paths.py \
    tests/test_kernels_cupy.py > "$OUT/guard_tests.log" 2>&1
  local rc=$? fused="" what
  echo "guard tests rc $rc: $(tail -1 "$OUT/guard_tests.log")"
  grep -q " passed" <(tail -1 "$OUT/guard_tests.log") || { rc=1; echo "no guard test ran"; }
  if [ $rc -ne 0 ]; then
    fused="MINIVIT_FUSED=0"; grep -E "^FAILED|^ERROR" "$OUT/guard_tests.log" | head -10
    echo "a guard test failed: the run goes on the plain path ($fused)"
  fi
  what="$TRAIN_ARGS --time-budget ${1:-18.5} --out '$RUN/run'"
  [ -f "$RUN/run/last.npz" ] && what="--resume '$RUN/run' --no-progress"   # stopped: go on
  date -u +%s > "$RUN/START"
  setsid nohup bash -c "cd '$PWD'; env $fused $PY train_cifar.py $what >> '$RUN/train.log' \
    2>&1; echo \$? > '$RUN/RC'; date -u +%s > '$RUN/END'" > /dev/null 2>&1 < /dev/null &
  sleep 30; tail -6 "$RUN/train.log"
  [ ! -f "$RUN/RC" ] || [ "$(cat "$RUN/RC")" = 0 ] || exit "$(cat "$RUN/RC")"
}

wait_run() {
  while [ "$(left "$1")" -gt 0 ] && [ ! -f "$RUN/END" ]; do sleep 3; done
  cp "$RUN/train.log" "$RUN"/run/{log.jsonl,summary.json,best.npz} "$OUT/" 2>/dev/null
  echo "started $(cat "$RUN/START" 2>/dev/null), ended $(cat "$RUN/END" 2>/dev/null)" \
    "rc $(cat "$RUN/RC" 2>/dev/null)"; tail -6 "$RUN/train.log"
}

bench() {
  [ -f "$RUN/END" ] || { echo "the run is still going: no benchmarks beside it"; exit 0; }
  for p in fp32 tf32 fp16; do
    [ "$(left "$1")" -lt 70 ] && break
    timeout 100 $PY benchmarks/bench_step.py --backend cupy --batch 512 --precision $p \
      --repeats 3 --steps 20 --min-s 2 > "$OUT/bench_$p.log" 2>&1
    echo "bench_step $p rc $?:"; grep "^| minivit\|^| torch" "$OUT/bench_$p.log"
  done
}

case "$1" in
  start) start "$2" ;;
  wait) wait_run "${2:-560}" ;;
  bench) bench "${2:-560}" ;;
  *) echo "usage: $0 start [BUDGET_MIN] | wait SECONDS | bench SECONDS"; exit 2 ;;
esac
