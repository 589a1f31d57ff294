#!/bin/sh
# carbond tags for Slurm tasks: a TaskProlog that needs no change to users' job scripts.
#
# Install on every compute node that runs carbond (deploy/systemd/carbond.service), then in slurm.conf:
#   TaskProlog=/etc/slurm/carbond-taskprolog.sh
# (an existing TaskProlog can call this one and pass its output through.)
#
# How attribution works: carbond finds every process whose environment has SLURM_JOB_ID (or CARBOND_JOB)
# by reading /proc/PID/environ (the service's CAP_SYS_PTRACE + CAP_DAC_READ_SEARCH). Without this
# script a task is already measured as job = $SLURM_JOB_NAME, run = $SLURM_JOB_ID.$SLURM_STEP_ID,
# project "default". This script adds what Slurm knows and the daemon cannot guess:
#   CARBOND_PROJECT  the job's account (else its partition), unless the job set one itself
#   CARBOND_PHASE    $CARBOND_SLURM_PHASE when the admin sets a default below, unless the job set one
#   CARBOND_RUN      $SLURM_JOB_ID.$SLURM_STEP_ID: every task of a step, on every node, is one run
# Users can still choose: sbatch --export=ALL,CARBOND_PROJECT=bert,CARBOND_PHASE=validation job.sh
#
# slurmstepd runs this as the job's user before each task; lines "export NAME=value" on its standard
# output become the task's environment. It must never fail a job: it always exits 0.

CARBOND_SLURM_PHASE=""   # e.g. "training" on a training partition; empty: carbond's default (development)

label() {  # printable, at most 128 characters, no spaces or quotes (safe in an export line)
    printf '%s' "$1" | tr -c 'A-Za-z0-9._:@+-' '_' | cut -c1-128
}

if [ -n "$SLURM_JOB_ID" ]; then
    if [ -z "$CARBOND_PROJECT" ]; then
        project=$(label "${SLURM_JOB_ACCOUNT:-${SLURM_JOB_PARTITION:-}}")
        [ -n "$project" ] && echo "export CARBOND_PROJECT=$project"
    fi
    if [ -z "$CARBOND_PHASE" ] && [ -n "$CARBOND_SLURM_PHASE" ]; then
        echo "export CARBOND_PHASE=$CARBOND_SLURM_PHASE"
    fi
    if [ -z "$CARBOND_RUN" ]; then
        run="$SLURM_JOB_ID"
        [ -n "$SLURM_STEP_ID" ] && run="$run.$SLURM_STEP_ID"
        echo "export CARBOND_RUN=$(label "$run")"
    fi
fi
exit 0
