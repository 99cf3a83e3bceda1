#!/usr/bin/env bash
# The main job, end to end on the embedded defaults (registry in .mlops/, local target):
# validate → plan → apply → score → status → monitor. Set KEEP=1 to leave the endpoint running.
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "mlops validate"
mlops validate

step "mlops plan"
mlops plan

step "mlops apply --yes"
mlops apply --yes

step "mlops score iris"
for row in "[5.1, 3.5, 1.4, 0.2]" "[6.2, 2.9, 4.3, 1.3]" "[6.7, 3.0, 5.2, 2.3]" "[5.8, 2.7, 5.1, 1.9]"; do
  mlops score iris --data "{\"data\": [$row]}"
done
mlops score iris --route /v2/models/iris-classifier/infer \
  --data '{"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": [5.0, 3.4, 1.5, 0.2, 6.9, 3.1, 5.4, 2.1]}]}'

# a batch like the training data: the monitor should find no drift
python3 -c 'import csv, json; rows = list(csv.reader(open("models/iris/baseline.csv")))[1:41]
print(json.dumps({"data": [[float(v) for v in row] for row in rows]}))' > .mlops/batch.json
mlops score iris --file .mlops/batch.json > /dev/null

step "mlops status"
mlops status

step "mlops monitor iris"
sleep 1  # the collector writes in the background
mlops monitor iris

step "mlops plan (nothing left to do)"
mlops plan

if [ "${KEEP:-0}" != "1" ]; then
  step "mlops destroy --yes"
  mlops destroy --yes
fi
