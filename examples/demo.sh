#!/usr/bin/env bash
# `make demo`: the main job on the embedded default (local Redis + local Ray head).
set -euo pipefail
cd "$(dirname "$0")/.."
SEGQ=.venv/bin/segq
DATA=.segq/data/synthetic-64

$SEGQ up
$SEGQ data prepare synthetic --out "$DATA" --size 64x64 --count 240 --seed 0
SWEEP=$($SEGQ submit sweep examples/demo_sweep.yaml --wait | tail -n 1)
$SEGQ summary "$SWEEP"
echo
echo "sweep job: $SWEEP   (segq summary $SWEEP --format json | segq jobs show $SWEEP)"
echo "dashboard: $(python3 -c 'import json;print(json.load(open(".segq/cluster.json"))["ray"]["dashboard_url"])')"
