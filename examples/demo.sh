#!/usr/bin/env bash
# `make demo`: the main job on the embedded default (a local Redis and a local Ray head).
# Everything it writes goes under $SEGQ_HOME (default .segq): the cluster, the data, the reports.
set -euo pipefail
cd "$(dirname "$0")/.."
SEGQ=.venv/bin/segq
HOME_DIR=${SEGQ_HOME:-.segq}
DATA=$HOME_DIR/data/synthetic-32-easy
REPORTS=$HOME_DIR/reports
START=$(date +%s)

$SEGQ up
$SEGQ data prepare synthetic --out "$DATA" --size 32x32 --count 1600 --difficulty easy --seed 0
SWEEP=$($SEGQ submit sweep examples/demo_sweep.yaml --data "$DATA" --wait | tail -n 1)
mkdir -p "$REPORTS/$SWEEP"
$SEGQ summary "$SWEEP" --format json > "$REPORTS/$SWEEP/rows.json"
# The saliency job starts from the sweep's best U-Net: a model that has learned.
UNET=$(.venv/bin/python examples/demo_summary.py --best-checkpoint unet "$REPORTS/$SWEEP/rows.json")
SALIENCY=$($SEGQ submit saliency examples/demo_saliency.yaml --data "$DATA" --load-from "$UNET" --wait | tail -n 1)
echo
$SEGQ summary "$SWEEP" --out "$REPORTS/$SWEEP"
echo
$SEGQ summary "$SALIENCY" --out "$REPORTS/$SALIENCY"
$SEGQ summary "$SALIENCY" --format json > "$REPORTS/$SALIENCY/rows.json"
echo
.venv/bin/python examples/demo_summary.py "$REPORTS/$SWEEP/rows.json" "$REPORTS/$SALIENCY/rows.json"
echo "demo took $(( $(date +%s) - START )) s; jobs: $SWEEP $SALIENCY"
echo "TensorBoard runs of the sweep: $($SEGQ tensorboard "$SWEEP" --no-start 2>/dev/null) (segq tensorboard $SWEEP starts TensorBoard there)"
echo "dashboard: $(.venv/bin/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["ray"]["dashboard_url"])' "$HOME_DIR/cluster.json")"
echo "stop the local cluster with: $SEGQ down"
