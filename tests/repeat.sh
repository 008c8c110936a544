#!/usr/bin/env bash
# Find flaky tests in one command: run the whole suite N times in each world
# (tox's `py` = monkey-patched, `plain` = un-patched) and print every failure
# with its test id.
#
#   tests/repeat.sh N [--busy] [--worlds py,plain] [-- PYTEST ARGS...]
#
# --busy keeps one core busy with a second process (`python -c "while True:
# pass"`) for the whole run, started and ended by this script: on a 2-core
# machine that is the load under which a flake shows. Each run's full output is
# kept in $REPEAT_LOG_DIR (default: a new temporary directory). Exits 1 if any
# run failed, 0 if all passed.
set -uo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 1 ] || usage
n=$1; shift
case "$n" in ''|*[!0-9]*) echo "repeat.sh: N must be a positive number, got '$n'" >&2; usage;; esac
[ "$n" -ge 1 ] || usage
busy=0
worlds="py,plain"
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --busy) busy=1;;
        --worlds) shift; worlds=${1:?--worlds needs a value};;
        --) shift; args=("$@"); break;;
        *) echo "repeat.sh: unknown option '$1'" >&2; usage;;
    esac
    shift
done

logdir=${REPEAT_LOG_DIR:-$(mktemp -d -t gworker-repeat-XXXXXX)}
mkdir -p "$logdir"
hog=""
cleanup() { [ -n "$hog" ] && kill "$hog" 2>/dev/null; }
trap cleanup EXIT INT TERM
if [ "$busy" -eq 1 ]; then
    python3 -c "while True: pass" &
    hog=$!
    echo "repeat.sh: a second process (pid $hog) keeps one core busy"
fi

# Build the tox environments once, outside the counted runs.
tox -e "$worlds" --notest -q >"$logdir/setup.log" 2>&1 || { cat "$logdir/setup.log"; exit 1; }

status=0
summary=""
IFS=',' read -r -a world_list <<<"$worlds"
for world in "${world_list[@]}"; do
    failed_runs=0
    for i in $(seq 1 "$n"); do
        log="$logdir/$world-$i.log"
        start=$(date +%s)
        tox -e "$world" -q --skip-pkg-install -- -p no:cacheprovider "${args[@]}" >"$log" 2>&1
        rc=$?
        secs=$(( $(date +%s) - start ))
        last=$(grep -E '(passed|failed|error).* in [0-9.]+s' "$log" | tail -1 | tr -d '=' | sed 's/^ *//;s/ *$//')
        if [ "$rc" -eq 0 ]; then
            echo "$world run $i/$n: ok (${secs}s): $last"
        else
            failed_runs=$((failed_runs + 1))
            status=1
            echo "$world run $i/$n: FAILED (exit $rc, ${secs}s): ${last:-see $log}"
            grep -E '^(FAILED|ERROR) ' "$log" | sed 's/^/    /'
            echo "    full output: $log"
        fi
    done
    summary="$summary$world: $((n - failed_runs)) of $n runs passed, $failed_runs failed\n"
done
printf '%b' "$summary"
echo "logs: $logdir"
exit $status
