#!/usr/bin/env bash
# An emulated aarch64 Linux device on this x86-64 machine: a Debian arm64 root run through qemu-user
# (binfmt_misc), with its own OpenSSH server on a loopback port. The agent deploys onto it over ssh like
# onto a Jetson: the device's Python, its aarch64 wheels (grpcio, numpy, onnxruntime, ai-edge-litert), its
# sshd. It is a functional stand-in, not a performance one: emulated vector maths is ~300x slower.
#
# Usage: scripts/arm64_device.sh COMMAND [--dir DIR] [--port PORT]
#   build    build the Debian arm64 root once and cache it as a tarball (7-30 minutes, by machine load); an
#            interrupted build resumes from its last finished stage (debootstrap, wheels)
#   up       build if needed, unpack the root into DIR, mount what it needs, start its sshd with throwaway
#            keys; prints the [devices.arm64] inventory table (also written to DIR/devices.toml)
#   down     stop every process running in the root, unmount everything mounted under it, delete DIR
#   status   say whether the device in DIR is up (exit 0) or not (exit 3); lists its mounts
#   clean-cache  delete the cached tarball and any unfinished build
#   stop-sshd / start-sshd   stop or start only the device's sshd (a device whose ssh server goes away)
#
# Needs root (chroot, mounts) and qemu-user-static + binfmt-support + debootstrap (Debian:
# apt-get install qemu-user-static binfmt-support debootstrap). Environment:
#   NNF_ARM64_DIR     the device directory (default: ${XDG_RUNTIME_DIR:-/tmp}/nnf-arm64)
#   NNF_CACHE_DIR     the cache (default: ${XDG_CACHE_HOME:-~/.cache}/nn-factory); the tarball is in arm64/
#   NNF_ARM64_MIRROR  Debian mirror for debootstrap (default: the one this machine's apt uses)
#
# Mounts (all under DIR/root, all removed by `down`, also when `up` fails half-way): proc, sysfs (read-only),
# a private tmpfs /dev with only null/zero/full/random/urandom/tty (never the host's /dev), devpts, /dev/shm,
# and an aarch64 /proc/cpuinfo over the host's (onnxruntime's cpuinfo parser crashes on the host's x86 one;
# the file describes qemu's emulated CPU as newer qemu-user versions do themselves). If binfmt_misc was not
# mounted, `up` mounts it and the last `down` unmounts it again.
set -euo pipefail

BUILD_VERSION=1                           # bump when the root's recipe changes (invalidates the cache)
SUITE=bookworm
INCLUDE="python3,python3-venv,openssh-server,procps,util-linux"
PIP_REQS=("grpcio>=1.85,<1.86" "grpcio-health-checking>=1.85,<1.86" "grpcio-reflection>=1.85,<1.86"
          "protobuf>=7.35.1,<8" "numpy>=1.26" "onnxruntime>=1.20" "ai-edge-litert>=2.3")
DEVICE_USER=device
DEVICE_PYTHON=/opt/nnf-venv/bin/python
STATE_DIR=/run/nnf-arm64                  # host-wide: which device directories are up (binfmt refcount)
MARKER=.nnf-arm64-device                  # marks a device directory made by `up` (`down` deletes nothing else)
DIR_FILES=(cpuinfo port client_key client_key.pub known_hosts devices.toml "$MARKER")

die() { echo "arm64_device: $*" >&2; exit 1; }
log() { echo "arm64_device: $*" >&2; }

CMD="${1:-}"; [ $# -gt 0 ] && shift
DIR="${NNF_ARM64_DIR:-${XDG_RUNTIME_DIR:-/tmp}/nnf-arm64}"
PORT=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) DIR="$2"; shift 2 ;;
    --port) PORT="$2"; shift 2 ;;
    -h|--help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
case "$PORT" in ''|*[!0-9]*) die "--port must be a number, got '$PORT'" ;; esac

CACHE="${NNF_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nn-factory}/arm64"
KEY=$(printf '%s\n' "$BUILD_VERSION" "$SUITE" "$INCLUDE" "${PIP_REQS[@]}" "$DEVICE_USER" | sha256sum | cut -c1-12)
if command -v zstd >/dev/null 2>&1; then COMP=(--zstd); EXT=tar.zst; else COMP=(--gzip); EXT=tar.gz; fi
TARBALL="$CACHE/debian-$SUITE-arm64-$KEY.$EXT"

need_root() {
  [ "$(id -u)" -eq 0 ] || die "needs root (chroot and mounts); run it with sudo"
}

qemu_binary() {
  for q in /usr/bin/qemu-aarch64-static /usr/libexec/qemu-binfmt/aarch64-binfmt-P; do
    [ -x "$q" ] && { echo "$q"; return 0; }
  done
  return 1
}

# -- binfmt_misc ---------------------------------------------------------------------------------------------
BINFMT=/proc/sys/fs/binfmt_misc
binfmt_ready() { [ -f "$BINFMT/qemu-aarch64" ] && grep -q '^enabled' "$BINFMT/qemu-aarch64" \
                   && grep -q '^flags:.*F' "$BINFMT/qemu-aarch64"; }
ensure_binfmt() {
  qemu_binary >/dev/null || die "qemu-user-static is not installed (apt-get install qemu-user-static binfmt-support)"
  mkdir -p "$STATE_DIR"
  if ! grep -q " $BINFMT binfmt_misc " /proc/mounts; then
    mount -t binfmt_misc binfmt_misc "$BINFMT" || die "cannot mount binfmt_misc at $BINFMT"
    touch "$STATE_DIR/binfmt-mounted"
  fi
  if ! binfmt_ready; then
    command -v update-binfmts >/dev/null 2>&1 || die "update-binfmts missing (apt-get install binfmt-support)"
    update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
    if ! binfmt_ready && [ -f /usr/share/binfmts/qemu-aarch64 ]; then
      update-binfmts --import qemu-aarch64 >/dev/null 2>&1 || true
      update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
    fi
    binfmt_ready || die "cannot register qemu-aarch64 with binfmt_misc (needs the F flag: qemu-user-static)"
  fi
}
release_binfmt() {  # unmount binfmt_misc when we mounted it and no device of ours is up any more
  if [ -f "$STATE_DIR/binfmt-mounted" ] && [ -z "$(ls -A "$STATE_DIR/up" 2>/dev/null)" ]; then
    if grep -q " $BINFMT binfmt_misc " /proc/mounts; then
      umount "$BINFMT" || log "warning: could not unmount $BINFMT"
    fi
    rm -f "$STATE_DIR/binfmt-mounted"
  fi
}

# -- mounts --------------------------------------------------------------------------------------------------
mounts_under() {  # mount points at or under $1, topmost (last mounted) first; /proc/mounts escapes decoded
  local root="$1" m
  awk '{print $2}' /proc/mounts | tac | while IFS= read -r m; do
    m=$(printf '%b' "$m")
    case "$m" in "$root"|"$root"/*) printf '%s\n' "$m" ;; esac
  done
}
kill_root_processes() {  # every process whose root directory is $1 (the sshd, its sessions, the agent)
  local root="$1" sig pid r left
  for sig in TERM KILL; do
    left=0
    for p in /proc/[0-9]*; do
      pid=${p#/proc/}
      r=$(readlink "$p/root" 2>/dev/null) || continue
      case "$r" in "$root"|"$root"/*) kill -s "$sig" "$pid" 2>/dev/null && left=1 ;; esac
    done
    [ "$left" -eq 0 ] && return 0
    for _ in $(seq 50); do  # up to 5 s for them to go
      left=0
      for p in /proc/[0-9]*; do
        r=$(readlink "$p/root" 2>/dev/null) || continue
        case "$r" in "$root"|"$root"/*) grep -q '^State:.Z' "$p/status" 2>/dev/null || left=1 ;; esac
      done
      [ "$left" -eq 0 ] && return 0
      sleep 0.1
    done
  done
}
unmount_all() {  # unmount everything under $1; fails loudly if anything stays
  local root="$1" m
  [ -d "$root" ] || return 0
  root=$(realpath "$root")
  kill_root_processes "$root"
  for _ in 1 2 3; do
    mounts_under "$root" | while IFS= read -r m; do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
    [ -z "$(mounts_under "$root")" ] && return 0
    sleep 0.5
  done
  log "still mounted under $root:"; mounts_under "$root" >&2
  return 1
}
remove_root() {  # delete a root directory, never while anything is mounted in it
  local root="$1"
  [ -e "$root" ] || return 0
  unmount_all "$root" || die "refusing to delete $root while something is mounted in it"
  rm -rf --one-file-system "$root"
}

mount_root() {  # the mounts a running root needs (idempotent; each one recorded as it is made)
  local root="$1" cpuinfo="$2"
  grep -q " $root/proc proc " /proc/mounts || mount -t proc proc "$root/proc"
  grep -q " $root/sys sysfs " /proc/mounts || mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
  if ! grep -q " $root/dev tmpfs " /proc/mounts; then
    # a private /dev: the root never sees (or could delete) the host's device nodes
    mount -t tmpfs -o mode=755,nosuid,size=1m nnf-dev "$root/dev"
    mknod -m 666 "$root/dev/null" c 1 3; mknod -m 666 "$root/dev/zero" c 1 5
    mknod -m 666 "$root/dev/full" c 1 7; mknod -m 666 "$root/dev/random" c 1 8
    mknod -m 666 "$root/dev/urandom" c 1 9; mknod -m 666 "$root/dev/tty" c 5 0
    ln -s /proc/self/fd "$root/dev/fd"; ln -s /proc/self/fd/0 "$root/dev/stdin"
    ln -s /proc/self/fd/1 "$root/dev/stdout"; ln -s /proc/self/fd/2 "$root/dev/stderr"
    mkdir -m 755 "$root/dev/pts"; mkdir -m 1777 "$root/dev/shm"
    mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$root/dev/pts"
    ln -s pts/ptmx "$root/dev/ptmx"
    mount -t tmpfs -o mode=1777,nosuid,nodev shm "$root/dev/shm"
  fi
  if [ -n "$cpuinfo" ] && ! grep -q " $root/proc/cpuinfo " /proc/mounts; then
    mount --bind "$cpuinfo" "$root/proc/cpuinfo"
  fi
}

# The emulated CPU as qemu-user >= 8 describes it in /proc/cpuinfo: implementer 0x00 ("reserved for software
# use"), part 0x051 ('Q'), features decoded from the AT_HWCAP that qemu hands the process.
write_cpuinfo() {
  local root="$1" out="$2" n features
  n=$(nproc)
  features=$(chroot "$root" /usr/bin/python3 -c '
import struct
names = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop "
         "sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg").split()
data = open("/proc/self/auxv", "rb").read()
hwcap = 0
for i in range(0, len(data) - 15, 16):
    key, val = struct.unpack_from("<QQ", data, i)
    if key == 16:  # AT_HWCAP
        hwcap = val
print(" ".join(n for i, n in enumerate(names) if hwcap >> i & 1))') || die "cannot run python3 in the arm64 root"
  : > "$out"
  for i in $(seq 0 $((n - 1))); do
    printf 'processor\t: %d\nBogoMIPS\t: 0.00\nFeatures\t: %s\nCPU implementer\t: 0x00\n' "$i" "$features" >> "$out"
    printf 'CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0x051\nCPU revision\t: 0\n\n' >> "$out"
  done
}

# -- build ---------------------------------------------------------------------------------------------------
default_mirror() {
  local uri
  uri=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
        | grep -v security | grep -oE 'https?://[^ ]+/debian/?' | head -n1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

build() {  # resumable: each finished stage is marked, a failure unmounts everything but keeps finished stages
  need_root
  ensure_binfmt
  [ -f "$TARBALL" ] && { log "cached root: $TARBALL"; return 0; }
  command -v debootstrap >/dev/null 2>&1 || die "debootstrap is not installed (apt-get install debootstrap)"
  mkdir -p "$CACHE"
  exec 9>"$CACHE/build.lock"
  flock 9
  [ -f "$TARBALL" ] && { log "cached root: $TARBALL (built meanwhile)"; return 0; }
  local work root mirror t0
  work="$CACHE/build-$KEY"; mkdir -p "$work"; work=$(realpath "$work"); root="$work/root"
  BUILD_WORK="$work"
  trap 'unmount_all "$BUILD_WORK/root" >/dev/null 2>&1 || true' EXIT  # never leave a mount behind
  trap 'exit 130' INT TERM
  mirror="${NNF_ARM64_MIRROR:-$(default_mirror)}"
  t0=$(date +%s)
  if [ ! -f "$work/.bootstrapped" ]; then  # an interrupted debootstrap cannot be resumed: start over
    remove_root "$root"
    log "building the Debian $SUITE arm64 root from $mirror (first stage)"
    debootstrap --arch=arm64 --foreign --variant=minbase --include="$INCLUDE" "$SUITE" "$root" "$mirror" \
      > "$work/debootstrap.log" 2>&1 || { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
    log "second stage (runs emulated, the slow part)"
    mount_root "$root" ""
    chroot "$root" /debootstrap/debootstrap --second-stage > "$work/second-stage.log" 2>&1 \
      || { tail -n 20 "$work/second-stage.log" >&2 || true; die "second stage failed"; }
    touch "$work/.bootstrapped"
  fi
  mount_root "$root" ""  # the second stage unmounts /proc and /sys on its way out
  write_cpuinfo "$root" "$work/cpuinfo"
  mount_root "$root" "$work/cpuinfo"
  if [ ! -f "$work/.wheels" ]; then
    log "agent dependencies (aarch64 wheels from PyPI)"
    rm -rf "$root/opt/nnf-venv"
    chroot "$root" /usr/bin/python3 -m venv /opt/nnf-venv
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/nnf-build-ca.crt" 2>/dev/null || true
    # a clean environment: the host's pip settings (indexes, constraints, find-links) must not leak in
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 PIP_DISABLE_PIP_VERSION_CHECK=1 \
      PIP_CERT="$( [ -f "$root/etc/nnf-build-ca.crt" ] && echo /etc/nnf-build-ca.crt )" \
      chroot "$root" /opt/nnf-venv/bin/pip install -q --no-cache-dir --only-binary=:all: "${PIP_REQS[@]}" \
      || die "pip install in the arm64 root failed (re-run to retry; the bootstrapped root is kept)"
    rm -f "$root/etc/nnf-build-ca.crt"
    touch "$work/.wheels"
  fi
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin chroot "$root" "$DEVICE_PYTHON" -c \
    'import grpc, numpy, onnxruntime, ai_edge_litert.interpreter, platform; assert platform.machine() == "aarch64"' \
    || die "the agent's dependencies do not import in the arm64 root"
  chroot "$root" /usr/bin/id -u "$DEVICE_USER" >/dev/null 2>&1 || chroot "$root" /usr/sbin/useradd -m -s /bin/sh "$DEVICE_USER"
  # host keys are made fresh at each `up`; caches and docs go
  rm -f "$root"/etc/ssh/ssh_host_* "$root/etc/machine-id"
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
         "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root/debootstrap" "$root/root/.cache"
  printf '%s\n' "$KEY" > "$root/etc/nnf-arm64-root"
  unmount_all "$root" || die "cannot unmount the build root's file systems"
  log "packing $TARBALL"
  tar -C "$root" --numeric-owner -cpf "$work/root.$EXT" "${COMP[@]}" . || die "packing the root failed"
  mv "$work/root.$EXT" "$TARBALL"
  # older builds and their leftovers are no longer useful
  find "$CACHE" -maxdepth 1 -name "debian-*-arm64-*.tar.*" ! -path "$TARBALL" -delete
  log "built in $(( $(date +%s) - t0 )) s: $TARBALL ($(du -h "$TARBALL" | cut -f1))"
  remove_root "$root"
  rm -rf --one-file-system "$work"
  trap - EXIT INT TERM
  BUILD_WORK=""
}
BUILD_WORK=""

# -- the running device --------------------------------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sshd_pid() {  # the device's sshd listener, if alive
  local pidfile="$1/root/run/nnf-sshd.pid" pid
  [ -f "$pidfile" ] || return 1
  pid=$(cat "$pidfile"); [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
  [ "$(readlink "/proc/$pid/root" 2>/dev/null)" = "$(realpath "$1/root")" ] || return 1
  echo "$pid"
}
wait_banner() {
  python3 - "$1" <<'EOF'
import socket, sys, time
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5) as s:
            if s.recv(4).startswith(b"SSH"):
                sys.exit(0)
    except OSError:
        time.sleep(0.2)
sys.exit(1)
EOF
}

start_sshd() {
  local root="$DIR/root" port
  [ -f "$DIR/port" ] || die "$DIR has no device (run: $0 up --dir $DIR)"
  port=$(cat "$DIR/port")
  sshd_pid "$DIR" >/dev/null && return 0
  mkdir -p "$root/run/sshd"
  rm -f "$root/run/nnf-sshd.pid"
  chroot "$root" /usr/sbin/sshd -f /etc/ssh/nnf_sshd_config -E /var/log/nnf-sshd.log \
    || die "the device's sshd did not start; see $root/var/log/nnf-sshd.log"
  wait_banner "$port" || die "the device's sshd does not answer on 127.0.0.1:$port; see $root/var/log/nnf-sshd.log"
}

descendants() {  # every process below $1 (a detached agent was re-parented away and is not among them)
  ps -e -o pid=,ppid= | awk -v root="$1" '
    { parent[$1] = $2 }
    END { for (p in parent) { q = parent[p]; while (q != "" && q != 0 && q != 1) {
            if (q == root) { print p; break }; q = parent[q] } } }'
}

stop_sshd() {  # the listener and every ssh session (the agent, in its own session, keeps running)
  local pid child
  pid=$(sshd_pid "$DIR") || return 0
  kill -STOP "$pid" 2>/dev/null || true  # no new connections while the tree is taken down
  for child in $(descendants "$pid"); do kill -9 "$child" 2>/dev/null || true; done
  kill -9 "$pid" 2>/dev/null || true
  for _ in $(seq 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
  rm -f "$DIR/root/run/nnf-sshd.pid"
}

up() {
  need_root
  build
  if [ -d "$DIR" ] && [ -n "$(ls -A "$DIR")" ] && [ ! -f "$DIR/$MARKER" ]; then
    die "$DIR exists and was not made by this script; choose an empty or new --dir"
  fi
  mkdir -p "$DIR"
  DIR=$(realpath "$DIR")
  touch "$DIR/$MARKER"
  local root="$DIR/root" uid gid
  local reg; reg="$STATE_DIR/up/$(printf '%s' "$DIR" | sha256sum | cut -c1-16)"
  if [ -f "$DIR/port" ] && sshd_pid "$DIR" >/dev/null && [ -n "$(mounts_under "$root")" ]; then
    log "already up"; cat "$DIR/devices.toml"; return 0
  fi
  trap 'rc=$?; if [ $rc -ne 0 ]; then log "up failed; tearing down"; down_quiet; fi' EXIT
  mkdir -p "$STATE_DIR/up"; printf '%s\n' "$DIR" > "$reg"
  if [ ! -f "$root/etc/nnf-arm64-root" ] || [ "$(cat "$root/etc/nnf-arm64-root")" != "$KEY" ]; then
    remove_root "$root"
    mkdir -p "$root.partial"
    tar -C "$root.partial" --numeric-owner -xpf "$TARBALL" "${COMP[@]}" || die "unpacking $TARBALL failed"
    mv "$root.partial" "$root"
  fi
  mount_root "$root" ""
  write_cpuinfo "$root" "$DIR/cpuinfo"
  mount_root "$root" "$DIR/cpuinfo"
  [ "$PORT" -ne 0 ] || PORT=$(free_port)
  echo "$PORT" > "$DIR/port"
  # throwaway keys: a host key for the device, a client key for the host
  rm -f "$root"/etc/ssh/ssh_host_ed25519_key* "$DIR"/client_key*
  ssh-keygen -q -t ed25519 -N '' -C nnf-arm64-device -f "$root/etc/ssh/ssh_host_ed25519_key"
  ssh-keygen -q -t ed25519 -N '' -C nnf-arm64-host -f "$DIR/client_key"
  uid=$(chroot "$root" /usr/bin/id -u "$DEVICE_USER"); gid=$(chroot "$root" /usr/bin/id -g "$DEVICE_USER")
  # no password, but not locked: without PAM, sshd refuses key logins to a locked ('!') account
  sed -i "s/^$DEVICE_USER:![^:]*:/$DEVICE_USER:*:/" "$root/etc/shadow"
  install -d -m 700 -o "$uid" -g "$gid" "$root/home/$DEVICE_USER/.ssh"
  install -m 600 -o "$uid" -g "$gid" "$DIR/client_key.pub" "$root/home/$DEVICE_USER/.ssh/authorized_keys"
  printf '[127.0.0.1]:%s %s\n' "$PORT" "$(cut -d' ' -f1,2 "$root/etc/ssh/ssh_host_ed25519_key.pub")" \
    > "$DIR/known_hosts"
  cat > "$root/etc/ssh/nnf_sshd_config" <<EOF
Port $PORT
ListenAddress 127.0.0.1
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /run/nnf-sshd.pid
UsePAM no
StrictModes no
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
AllowTcpForwarding yes
Subsystem sftp internal-sftp
MaxStartups 50
LogLevel ERROR
EOF
  start_sshd
  cat > "$DIR/devices.toml" <<EOF
# the emulated aarch64 device (scripts/arm64_device.sh up --dir $DIR)
[devices.arm64]
transport = "ssh"
host = "127.0.0.1"
port = $PORT
user = "$DEVICE_USER"
key_file = "$DIR/client_key"
known_hosts = "$DIR/known_hosts"
python = "$DEVICE_PYTHON"
runtime = "auto"
workdir = "nnf-agent"
connect_timeout_s = 30.0
start_timeout_s = 300.0
EOF
  trap - EXIT
  log "up: ssh -p $PORT -i $DIR/client_key -o UserKnownHostsFile=$DIR/known_hosts $DEVICE_USER@127.0.0.1"
  cat "$DIR/devices.toml"
}

down_quiet() {  # only what `up` made is deleted; DIR itself only when that leaves it empty
  local root="$DIR/root" f
  remove_root "$root"
  remove_root "$root.partial"
  for f in "${DIR_FILES[@]}"; do rm -f "$DIR/$f"; done
  rm -f "$STATE_DIR/up/$(printf '%s' "$DIR" | sha256sum | cut -c1-16)"
  rmdir "$DIR" 2>/dev/null || true
  release_binfmt
}

down() {
  need_root
  [ -e "$DIR" ] || { log "nothing at $DIR"; release_binfmt; return 0; }
  DIR=$(realpath "$DIR")
  [ -f "$DIR/$MARKER" ] || die "$DIR was not made by this script (no $MARKER); refusing to touch it"
  down_quiet
  log "down: $DIR removed, nothing mounted"
}

status() {
  local root pid
  [ -d "$DIR" ] || { echo "down (no $DIR)"; exit 3; }
  DIR=$(realpath "$DIR"); root="$DIR/root"
  if pid=$(sshd_pid "$DIR"); then
    echo "up: sshd pid $pid on 127.0.0.1:$(cat "$DIR/port"), inventory $DIR/devices.toml"
  else
    echo "sshd not running in $DIR"
  fi
  echo "mounts:"; mounts_under "$root" | sed 's/^/  /'
  [ -n "${pid:-}" ] || exit 3
}

case "$CMD" in
  build) build; release_binfmt ;;
  clean-cache) need_root; for w in "$CACHE"/build-*; do [ -d "$w" ] && remove_root "$w/root" && rm -rf --one-file-system "$w"; done
               rm -f "$CACHE"/debian-*-arm64-*.tar.*; log "cache emptied: $CACHE" ;;
  up) up ;;
  down) down ;;
  status) status ;;
  stop-sshd) need_root; DIR=$(realpath "$DIR"); stop_sshd ;;
  start-sshd) need_root; DIR=$(realpath "$DIR"); start_sshd ;;
  ""|-h|--help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$CMD' (build, up, down, status, stop-sshd, start-sshd)" ;;
esac
