#!/usr/bin/env bash
# From clips to scores: every command reads the previous one's output folder as it is -- no
# --recursive, --align or --gt-offset glue. About 20-30 s on one CPU thread (2 clips of 10 frames).
# Usage: examples/pipeline.sh [WORK_DIR]        (default: ./vpcli-pipeline; VPCLI_THREADS=1 to pin threads)
set -euo pipefail
work=${1:-vpcli-pipeline}
mkdir -p "$work"
cd "$work"

# 1. Clips with ground truth: street/seq_0000K/ holds frames/, labels/ and flow_forward.npz.
vpcli data synth-street --out street --num 2 --length 10 --size 128x256 --seed 7

# 2. Re-encode them as the bundled street predictor wants them (64x128 MP4):
#    converted/seq_0000K/video.mp4 -- each folder is one clip, named seq_0000K, for every command below.
vpcli data convert street --out converted --size 64x128

# 3. Label maps of every frame: seg/seq_0000K/labels/*.png (+ labels.npz, overlay.mp4).
vpcli segment converted --out seg

# 4. Forward optical flow: flow/seq_0000K/flow_forward.npz (+ forward/*.flo, a colour wheel).
vpcli flow converted --out flow

# 5. Three samples of frames 4..9 from context frames 0..3: pred/seq_0000K/sample_00K.mp4; its
#    meta.json records the clip, the context frames and the first predicted frame (4).
vpcli predict converted --out pred --weights slamp-synthstreet --start 0 --horizon 6 --samples 3

# 6. Scores. Each eval writes results.json, results.csv, per-frame plots and best/worst videos.
#    Predicted frames against the clips they were predicted from: meta.json says frame t of a sample
#    is frame 4 + t of its clip, so the context is never scored (best of 3 samples per clip).
vpcli eval --pred pred --gt converted --metric psnr,ssim,mse --out eval_frames
#    The segmenter against the generator's labels: the 64x128 label maps are scored at their own
#    size, the 128x256 truth resized to it (one line says so).
vpcli eval --pred seg --gt street --metric miou --out eval_labels
#    The flow against the generator's true flow, likewise at 64x128 (vectors scaled with the size).
vpcli eval --pred flow --gt street --metric epe --out eval_flow

echo "scores in $work/eval_frames, $work/eval_labels and $work/eval_flow (results.json)"
