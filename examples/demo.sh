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
SALIENCY=$($SEGQ submit saliency examples/demo_saliency.yaml --data "$DATA" --wait | tail -n 1)
echo
$SEGQ summary "$SWEEP" --out "$REPORTS/$SWEEP"
echo
$SEGQ summary "$SALIENCY" --out "$REPORTS/$SALIENCY"
$SEGQ summary "$SWEEP" --format json > "$REPORTS/$SWEEP/rows.json"
$SEGQ summary "$SALIENCY" --format json > "$REPORTS/$SALIENCY/rows.json"
echo
.venv/bin/python examples/demo_summary.py "$REPORTS/$SWEEP/rows.json" "$REPORTS/$SALIENCY/rows.json"
echo "demo took $(( $(date +%s) - START )) s; jobs: $SWEEP $SALIENCY"
echo "dashboard: $(.venv/bin/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["ray"]["dashboard_url"])' "$HOME_DIR/cluster.json")"
echo "stop the local cluster with: $SEGQ down"
