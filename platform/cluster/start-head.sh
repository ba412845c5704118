#!/usr/bin/env bash
# Start the head node of a Ray cluster for ncsn-search: token authentication on, the dashboard
# (which also serves the Jobs API: whoever reaches it can run code) on the head's 127.0.0.1 only.
#
#   platform/cluster/start-head.sh                      # GCS on port 6379, this machine's CPUs/GPUs
#   platform/cluster/start-head.sh --port=6380 --num-cpus=0 --block     # any `ray start` option
#
# The token lives in ~/.ray/auth_token (made here once); every node that joins, and every
# client of the dashboard, needs it: copy that file to the workers (see join.sh). Watch the
# dashboard from your machine through an SSH tunnel: ssh -L 8265:127.0.0.1:8265 HEAD.
set -euo pipefail
export RAY_AUTH_MODE=token
ray get-auth-token --generate > /dev/null
exec ray start --head --dashboard-host=127.0.0.1 "$@"
