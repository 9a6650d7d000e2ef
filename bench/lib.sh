# shellcheck shell=bash
# Helpers shared by the benchmark scripts of bench/ (sourced, not run).

# apt_install PACKAGE...: installs Debian packages as root or with sudo
# without a password; says why and fails when it cannot.
apt_install() {
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      echo "cannot install $*: not root and no password-less sudo" >&2
      return 1
    fi
  fi
  command -v apt-get >/dev/null 2>&1 || { echo "cannot install $*: apt-get not found" >&2; return 1; }
  echo "installing Debian's $* (apt-get install $*)" >&2
  "${sudo[@]}" apt-get update -qq >&2 &&
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >&2
}

# port_free HOST:PORT: true when nothing accepts connections there.
port_free() {
  local host=${1%:*} port=${1##*:}
  ! (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

# stat_ticks PID FIELD FIELD: the sum of two fields of /proc/PID/stat,
# numbered as in proc(5) (from 3 on: the ones after the command name), in
# clock ticks; fails when the process is gone.
stat_ticks() {
  local stat rest a=$(($2 - 2)) b=$(($3 - 2))
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  rest=${stat##*) }
  # shellcheck disable=SC2086
  set -- $rest
  echo $((${!a} + ${!b}))
}

# ticks_seconds TICKS: clock ticks as seconds.
ticks_seconds() {
  awk -v t="$1" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.3f\n", t / hz }'
}

# cpu_seconds PID...: user + system CPU time the processes used so far
# (utime and stime).
cpu_seconds() {
  local total=0 pid ticks
  for pid in "$@"; do
    ticks=$(stat_ticks "$pid" 14 15) || continue
    total=$((total + ticks))
  done
  ticks_seconds "$total"
}

# children_cpu_seconds PID: user + system CPU time of the children PID has
# waited for so far (cutime and cstime): call it with the shell's $$ before
# and after a command it runs in the foreground, for that command's CPU.
children_cpu_seconds() {
  local ticks
  ticks=$(stat_ticks "$1" 16 17) || return 1
  ticks_seconds "$ticks"
}

# wait_until SECONDS DESCRIPTION CMD...: runs CMD every 0.2 s until it
# succeeds; fails after SECONDS.
wait_until() {
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "timed out waiting for $what" >&2
      return 1
    fi
    sleep 0.2
  done
}

# load_average: the three load averages of /proc/loadavg.
load_average() { cut -d' ' -f1-3 /proc/loadavg; }
