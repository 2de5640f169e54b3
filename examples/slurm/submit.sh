#!/bin/bash
# Submit the array job and, after it, the merge job.
#   export HYPERSTUDY_API_KEY=hst_live_...
#   ./submit.sh EXPERIMENT_ID|--all OUT_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${HYPERSTUDY_API_KEY:?export HYPERSTUDY_API_KEY first}"
usage="usage: $0 EXPERIMENT_ID|--all OUT_DIR"
experiment=${1:?$usage}
out=${2:?$usage}
# Where OUT_DIR's file system has no file locks (flock fails: see the README), the tasks cannot
# elect the one that surveys; write their plan here first, for as many tasks as --array has:
#   hyperstudy-bulk plan "$experiment" --out "$out" --shards 4
array=$(sbatch --parsable "$here/archive-array.sbatch" "$experiment" "$out")
sbatch --dependency=afterok:"${array%%;*}" "$here/merge.sbatch" "$out"
