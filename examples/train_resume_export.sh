#!/usr/bin/env bash
# Train the ConvLSTM baseline, stop, resume exactly, and export the result as named weights.
set -euo pipefail
run=${1:-runs/example}
vpcli train --config convlstm-mmnist-tiny --out "$run" --set train.steps=10 --overwrite
vpcli train --resume "$run" --set train.steps=20           # continues from step 10 exactly
vpcli weights export "$run" --name example-convlstm --fp16 --overwrite
VPCLI_MANIFEST="$run/export/example-convlstm.manifest.yaml" vpcli weights verify example-convlstm
