#!/usr/bin/env bash
# Slurm job array: task K processes shard K of N with the reelql Docker image (through
# Apptainer/Singularity, as most clusters run containers), then a dependent job merges the shards.
#   sbatch pipelines/cluster/slurm-array.sh            # submits the array and the merge
#SBATCH --job-name=reelql
#SBATCH --array=1-8
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=12:00:00
#SBATCH --requeue
set -euo pipefail
N=8
IMAGE=${REELQL_IMAGE:-docker://registry.example/reelql:latest}
RESULTS=${REELQL_RESULTS:-/shared/reelql}
SPEC=${REELQL_SPEC:-/shared/reelql/nightly.yaml}
if [ -z "${SLURM_ARRAY_TASK_ID:-}" ]; then
  # Submitted directly: queue the array, then the merge after all its tasks.
  array=$(sbatch --parsable "$0")
  sbatch --dependency=afterany:"$array" --job-name=reelql-merge --wrap \
    "apptainer exec $IMAGE reelql merge $RESULTS/nightly.sqlite $RESULTS/shard-*.sqlite"
  exit 0
fi
K=$SLURM_ARRAY_TASK_ID
# A requeued task resumes: its database keeps the clips it finished.
apptainer exec --bind /srv/footage,/models,"$RESULTS" "$IMAGE" \
  reelql run "$SPEC" --shard "$K/$N" --db "$RESULTS/shard-$K.sqlite" --log "$RESULTS/shard-$K.log"
