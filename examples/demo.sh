#!/usr/bin/env bash
# `make demo`: the main job on the embedded default (a local Redis and a local Ray head).
set -euo pipefail
cd "$(dirname "$0")/.."
SEGQ=.venv/bin/segq
DATA=.segq/data/synthetic-64

$SEGQ up
$SEGQ data prepare synthetic --out "$DATA" --size 64x64 --count 320 --seed 0
SWEEP=$($SEGQ submit sweep examples/demo_sweep.yaml --wait | tail -n 1)
SALIENCY=$($SEGQ submit saliency examples/demo_saliency.yaml --wait | tail -n 1)
echo
$SEGQ summary "$SWEEP" --out ".segq/reports/$SWEEP"
echo
$SEGQ summary "$SALIENCY" --out ".segq/reports/$SALIENCY"
echo
echo "jobs: $SWEEP $SALIENCY"
echo "dashboard: $(.venv/bin/python -c 'import json; print(json.load(open(".segq/cluster.json"))["ray"]["dashboard_url"])')"
echo "stop the local cluster with: $SEGQ down"
