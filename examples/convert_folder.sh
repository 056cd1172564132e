#!/usr/bin/env bash
# Convert every clip under a folder to 64x64 MP4s in two parallel shards, then summarise.
# Usage: examples/convert_folder.sh CLIPS_DIR OUT_DIR
# Each shard takes every second clip of the sorted list; outputs are written atomically, so an
# interrupted run never leaves a half-written video, and a rerun with --overwrite redoes it.
set -euo pipefail
clips=${1:?usage: $0 CLIPS_DIR OUT_DIR}
out=${2:?usage: $0 CLIPS_DIR OUT_DIR}
shards=2
for k in $(seq 1 "$shards"); do
  find "$clips" -type f \( -name '*.mp4' -o -name '*.avi' -o -name '*.mkv' -o -name '*.gif' \) \
    | vpcli data convert - --out "$out" --size 64x64 --shard "$k/$shards" --json > "$out.shard$k.jsonl" &
done
wait
vpcli data info "$out" --recursive --json > "$out.info.jsonl"
echo "converted $(grep -c '"ok": true' "$out".shard*.jsonl | awk -F: '{s+=$2} END {print s}') clips; details in $out.info.jsonl"
