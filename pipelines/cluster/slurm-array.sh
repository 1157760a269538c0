#!/usr/bin/env bash
# Slurm job array: task K processes shard K of N into its own database, then a dependent job
# merges the shards. By default reelql runs from the reelql image through Apptainer/Singularity,
# as most clusters run containers; REELQL_BIN runs an installed binary instead.
#   sbatch pipelines/cluster/slurm-array.sh     # or run it: it submits the array and the merge
# Settings (environment; sbatch passes the submitting shell's environment to the tasks):
#   REELQL_SHARDS   N, the number of array tasks and shards (8)
#   REELQL_SPEC     the pipeline spec every task runs (/shared/reelql/nightly.yaml)
#   REELQL_RESULTS  where shard-K.sqlite, shard-K.log and the merged database go (/shared/reelql)
#   REELQL_MERGED   the merged database ($REELQL_RESULTS/nightly.sqlite)
#   REELQL_BIN      a reelql binary to run directly (no container)
#   REELQL_IMAGE    the container image for Apptainer (docker://registry.example/reelql:latest)
#   REELQL_BIND     what Apptainer binds besides $REELQL_RESULTS (/srv/footage,/models)
# Submitting prints "ARRAY_JOB_ID MERGE_JOB_ID". A task that is killed or requeued (node failure,
# preemption, `scontrol requeue`) resumes from its database: the clips it finished are kept.
#SBATCH --job-name=reelql
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=12:00:00
#SBATCH --requeue
set -euo pipefail
N=${REELQL_SHARDS:-8}
RESULTS=${REELQL_RESULTS:-/shared/reelql}
SPEC=${REELQL_SPEC:-/shared/reelql/nightly.yaml}
MERGED=${REELQL_MERGED:-$RESULTS/nightly.sqlite}
if [ -n "${REELQL_BIN:-}" ]; then
  reelql=("$REELQL_BIN")
else
  reelql=(apptainer exec --bind "${REELQL_BIND:-/srv/footage,/models},$RESULTS"
          "${REELQL_IMAGE:-docker://registry.example/reelql:latest}" reelql)
fi
if [ -z "${SLURM_ARRAY_TASK_ID:-}" ]; then
  # Submitted directly (or run as a script): queue the array, then the merge after all its tasks.
  array=$(sbatch --parsable --array=1-"$N" "$0")
  array=${array%%;*}
  merge=$(sbatch --parsable --dependency=afterany:"$array" --job-name=reelql-merge --wrap \
    "$(printf '%q ' "${reelql[@]}") merge $(printf '%q' "$MERGED") $(printf '%q' "$RESULTS")/shard-*.sqlite")
  echo "${array} ${merge%%;*}"
  exit 0
fi
K=$SLURM_ARRAY_TASK_ID
# reelql runs as a job step (srun), so Slurm signals and accounts it as the task's work. A
# requeued task resumes: its database keeps the clips it finished. Exit 3 (some videos failed) is
# a finished shard, not a failed task.
status=0
srun --ntasks=1 "${reelql[@]}" run "$SPEC" --shard "$K/$N" --db "$RESULTS/shard-$K.sqlite" --log "$RESULTS/shard-$K.log" --quiet || status=$?
[ "$status" -eq 3 ] && status=0
exit "$status"
