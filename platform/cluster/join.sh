#!/usr/bin/env bash
# Join this machine to a running ncsn-search Ray cluster as a worker node.
#
#   platform/cluster/join.sh HEAD_IP:6379                 # the address start-head.sh printed
#   platform/cluster/join.sh HEAD_IP:6379 --num-gpus=8 --block           # any `ray start` option
#
# The head uses token authentication: this machine needs the head's ~/.ray/auth_token (copy it
# with scp, or export RAY_AUTH_TOKEN=<its contents>); without it the join fails with
# InvalidAuthToken. The experiment folder must be on storage every node reaches (a shared
# filesystem path on every node) given to run_search.py as --storage-path.
set -euo pipefail
if [ $# -lt 1 ]; then
    echo "usage: $0 HEAD_IP:PORT [ray start options...]" >&2
    exit 2
fi
address=$1
shift
export RAY_AUTH_MODE=token
exec ray start --address="$address" "$@"
