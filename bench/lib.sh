# bench/lib.sh: shell helpers shared by the bench scripts
# (sourced, not run).  log and record need $run and $results set by the caller.

log() { printf '%s %s\n' "$(date +%T)" "$*" | tee -a "$run/run.log" >&2; }

# Stops a process this script started: TERM, up to 10 s, then KILL.
stop_pid() {
    local pid=$1 i
    [[ -n $pid ]] || return 0
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
}

wait_listen() { # port pid [seconds]
    local i tries=$((${3:-10} * 20))
    for ((i = 0; i < tries; i++)); do
        ss -Hltn "( sport = :$1 )" 2>/dev/null | grep -q . && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# Runs a load generator bounded in time; prints its result line.  Its exit
# status 2 (it found lost messages or errors) is logged, any other failure
# logged and returned; its stderr goes to $run/NAME.log.
bounded() { # seconds program args...
    local bound=$1 prog=$2 name rc=0 line
    shift 2
    name=$(basename "$prog")
    line=$(timeout -k 5 "$bound" "$prog" "$@" 2>>"$run/$name.log") || rc=$?
    if ((rc == 2)); then
        log "$name $*: messages lost or errors: $line"
    elif ((rc != 0)); then
        log "$name $* failed (exit $rc; see $run/$name.log)"
        return 1
    fi
    echo "$line"
}

# With a coprocess IDLE (a load generator's idle mode): sends it a line
# (none if empty), then reads its answer into $reply (empty after the timeout).
ask_idle() { # line seconds
    if [[ -n $1 ]]; then echo "$1" >&"${IDLE[1]}" || true; fi
    read -r -t "$2" reply <&"${IDLE[0]}" || reply=""
}

# Exits naming the first tool that is missing and the packages that bring them.
need_tools() { # script "packages" tool...
    local script=$1 pkgs=$2 tool
    shift 2
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "$script: $tool is missing (apt-get install $pkgs)" >&2; exit 1; }
    done
}

# When $mgate_bin is missing: builds it (RelWithDebInfo, in $top/build) and points $mgate_bin there.
build_mgate_if_missing() { # script
    [[ -x $mgate_bin ]] && return 0
    echo "$1: building $mgate_bin" >&2
    cmake -S "$top" -B "$top/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$top/build" -j2 --target mgate >/dev/null
    mgate_bin=$top/build/mgate
}

# "-u NAME" for every MGATE_* variable of the caller's environment (for env).
unset_mgate_vars() {
    local v
    for v in $(compgen -e | grep '^MGATE_' || true); do printf -- '-u %s ' "$v"; done
}

# ---- /proc readings -----------------------------------------------------

hz=$(getconf CLK_TCK)
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }     # utime+stime
cpu_split() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12, $13}'; }      # utime stime
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
kv() { tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1 == k {print $2}'; } # key line

per_each() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN {printf "%.3f", n ? (b - a) / n : 0}'; } # before after n: growth per one
sum() { awk 'BEGIN {s = 0; for (i = 1; i < ARGC; i++) s += ARGV[i]; print s}' "$@"; }
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$results"; }

# Busy share (%) of all CPUs over one second: anything else running here
# competes with the processes measured.
busy_share() {
    local a1 b1 c1 d1 e1 f1 g1 h1 a2 b2 c2 d2 e2 f2 g2 h2
    read -r _ a1 b1 c1 d1 e1 f1 g1 h1 _ </proc/stat
    sleep 1
    read -r _ a2 b2 c2 d2 e2 f2 g2 h2 _ </proc/stat
    awk -v busy=$(((a2 + b2 + c2 + f2 + g2 + h2) - (a1 + b1 + c1 + f1 + g1 + h1))) \
        -v all=$(((a2 + b2 + c2 + d2 + e2 + f2 + g2 + h2) - (a1 + b1 + c1 + d1 + e1 + f1 + g1 + h1))) \
        'BEGIN {printf "%.0f", all ? 100 * busy / all : 0}'
}

machine_line() { echo "$(nproc) CPUs, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), Linux $(uname -r)"; }

# Sets machine, mgate_rev and busy_before and logs them: the first lines of a run's log.
log_run_start() { # name
    machine=$(machine_line)
    mgate_rev=$(git -C "$top" describe --always --dirty 2>/dev/null || echo unknown)
    busy_before=$(busy_share)
    log "bench $1: $machine; mgate $mgate_bin ($mgate_rev); results in $run"
    if ((busy_before > 10)); then log "warning: the machine was ${busy_before}% busy before the run; figures will be noisy"; fi
}

# A proxy holds two descriptors per client: raise the soft limit as far as
# allowed and cap $idle (the idle clients wanted) to what it allows.
fit_fd_limit() { # script name, for the message
    local hard want
    hard=$(ulimit -Hn)
    [[ $hard == unlimited ]] && hard=1048576
    want=$((hard < 20000 ? hard : 20000))
    ulimit -n "$want"
    if ((idle > (want - 200) / 2)); then
        echo "$1: --idle $idle is more than the fd limit ($want) allows; using $(((want - 200) / 2))" >&2
        idle=$(((want - 200) / 2))
    fi
}

# The options every bench script parses the same way.  $1: the script's name
# (for messages); $2: what --smoke sets (evaluated before any option, so an
# option given with --smoke wins); $3: the script's own options, words of
# "--opt=var" (takes a value), "--opt=var=value" (a flag) or
# "--opt=var=value:numvar" (a flag with an optional number after it); then
# the arguments.  --smoke, --mgate, --out and -h/--help are every script's
# (they set mgate_bin and outdir; usage is the script's).
bench_options() {
    local _name=$1 _smoke=$2 _spec=$3 _a _o
    shift 3
    for _a in "$@"; do [[ $_a == --smoke ]] && eval "$_smoke"; done
    while (($#)); do
        case $1 in
        --smoke) ;;
        --mgate) mgate_bin=$(realpath -m -- "$2"); shift ;;
        --out) outdir=$(realpath -m -- "$2"); shift ;;
        -h | --help) usage; exit 0 ;;
        *)
            _o=$(bench_option_of "$_spec" "$1") || { echo "bench/$_name: unknown option $1" >&2; usage >&2; exit 64; }
            case $_o in
            *=*:*)
                printf -v "${_o%%=*}" '%s' "$(_v=${_o#*=}; echo "${_v%%:*}")"
                if [[ ${2:-} =~ ^[0-9]+$ ]]; then printf -v "${_o##*:}" '%s' "$2"; shift; fi ;;
            *=*) printf -v "${_o%%=*}" '%s' "${_o#*=}" ;;
            *)
                (($# >= 2)) || { echo "bench/$_name: $1 needs a value" >&2; exit 64; }
                printf -v "$_o" '%s' "$2"
                shift ;;
            esac ;;
        esac
        shift
    done
}
bench_option_of() { local w; for w in $1; do [[ ${w%%=*} == "$2" ]] && { echo "${w#*=}"; return 0; }; done; return 1; }
