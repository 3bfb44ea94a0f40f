#!/usr/bin/env bash
# The depth study: every method at depths 6, 12, 24, 48 (spec.json), trained into runs/depth_study
# (2 single-threaded runs at a time), probed, plotted into figures/; then each run's log, config and
# layer-removal result are copied into logs/ so that the figures can be redrawn from the repository:
#   /usr/bin/python3 scripts/compare docs/experiments/depth_study/spec.json --plot-only   (needs runs/)
#   /usr/bin/python3 scripts/compare docs/experiments/depth_study/spec.json --plot-only \
#       --runs docs/experiments/depth_study/logs                                          (from logs/)
# Run from the repository root after make; rerunning continues an interrupted study.
set -euo pipefail
cd "$(dirname "$0")/../../.."
here=docs/experiments/depth_study
/usr/bin/python3 scripts/compare "$here/spec.json" "$@"
for run in runs/depth_study/*/*/*/; do
    dest="$here/logs/${run#runs/depth_study/}"
    mkdir -p "$dest"
    cp "$run"/config.json "$run"/log.jsonl "$dest"
    [ -f "$run/layer_removal.json" ] && cp "$run/layer_removal.json" "$dest"
done
echo "logs copied to $here/logs"
