# Shared by bench/load.sh and bench/stack.sh; sourced, not run.

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
