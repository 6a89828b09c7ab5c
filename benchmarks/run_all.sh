#!/usr/bin/env bash
# Run the start-up, scheduler, dry-run and run-API (events) benchmarks one after the other; each prints its table
# and ends with TARGET lines. Extra arguments: --quick (fewer repeats), --with-run (also
# bench_run.py, the figures of real runs). Exit status 1 when any target was missed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
quick=0
with_run=0
for arg in "$@"; do
    case "$arg" in
        --quick) quick=1 ;;
        --with-run) with_run=1 ;;
        *) echo "usage: benchmarks/run_all.sh [--quick] [--with-run]" >&2; exit 2 ;;
    esac
done
if [ "$quick" = 1 ]; then
    startup=(--repeat 10); scheduler=(--repeat 3 --naive-repeat 1); dryrun=(--repeat 10)
else
    startup=(); scheduler=(); dryrun=()
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
run() {
    echo "==> $*"
    "$PY" "$@" | tee -a "$log"
    echo
}
run benchmarks/bench_startup.py "${startup[@]}"
run benchmarks/bench_scheduler.py "${scheduler[@]}"
run benchmarks/bench_dryrun.py "${dryrun[@]}"
run benchmarks/bench_events.py $([ "$quick" = 1 ] && echo --quick)
run benchmarks/bench_merge.py $([ "$quick" = 1 ] && echo --seeds 1)
if [ "$with_run" = 1 ]; then
    run benchmarks/bench_run.py $([ "$quick" = 1 ] && echo --quick)
fi
echo "==> summary"
grep '^TARGET' "$log"
! grep -q '^TARGET.*MISSED$' "$log"
