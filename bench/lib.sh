# Shared by the scripts in bench/; sourced, not run.

# stop_all: every server and stand-in the script started, by the pid each
# left in $WORK (they are started inside command substitutions, so the
# script's own job list never holds them): TERM, up to 5 s to finish, then
# KILL.
stop_all() {
    local pids=()
    for file in "$WORK"/*.pid; do
        [[ -e $file ]] && pids+=("$(cat "$file")")
    done
    ((${#pids[@]})) || return 0
    kill "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 50); do
        running "${pids[@]}" || return 0
        sleep 0.1
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
}

# running PID...: whether any of them is still running (a zombie is not).
running() {
    local pid state
    for pid in "$@"; do
        state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
        [[ -n $state && $state != Z ]] && return 0
    done
    return 1
}

# make_work_dir: a new $WORK, removed (after stop_all) when the script exits.
make_work_dir() {
    WORK=$(mktemp -d)
    trap 'stop_all; rm -rf "$WORK"' EXIT
}

# stand_in NAME [PREFIX...]: starts the loopback stand-in example NAME from
# $EXAMPLES, quiet, behind PREFIX (a taskset, say), and prints what its
# first line announces (the DSN or the endpoint). What it says as it runs
# goes to $WORK/NAME.err.
stand_in() {
    local name=$1
    shift
    STAND_IN_QUIET=1 "$@" "$EXAMPLES/$name" 127.0.0.1:0 >"$WORK/$name.out" 2>"$WORK/$name.err" &
    echo $! >"$WORK/$name.pid"
    for _ in $(seq 100); do
        local line
        line=$(head -1 "$WORK/$name.out")
        if [[ -n $line ]]; then
            echo "${line#*=}"
            return 0
        fi
        sleep 0.1
    done
    echo "$(basename "$0"): $name did not start" >&2
    exit 1
}
