#!/bin/bash
# Submit the array job and, after it, the merge job.
#   export HYPERSTUDY_API_KEY=hst_live_...
#   ./submit.sh EXPERIMENT_ID|--all OUT_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${HYPERSTUDY_API_KEY:?export HYPERSTUDY_API_KEY first}"
array=$(sbatch --parsable "$here/archive-array.sbatch" "$1" "$2")
sbatch --dependency=afterok:"${array%%;*}" "$here/merge.sbatch" "$2"
