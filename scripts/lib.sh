# Shared by scripts/setup and scripts/env: where the environment lives and how to enter it.
# shellcheck shell=bash
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${XIAOZHI_CACHE:-$HOME/.cache/xiaozhi-ha}
ROOT=$CACHE/root          # Debian root, used when the host has no Python >= 3.14.2
ROOT_VENV=/opt/venv       # the venv's path inside that root
HOST_VENV=$CACHE/venv     # the venv when the host's own Python is new enough

in_root() {  # run a command inside the root, with the checkout's parent at the same path
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
  XIAOZHI_ROOT=$ROOT XIAOZHI_BIND=$(dirname "$REPO") unshare -m --fork sh -c '
    set -e
    mount --make-rprivate /
    mount --bind /proc "$XIAOZHI_ROOT/proc"
    mount --rbind /dev "$XIAOZHI_ROOT/dev"
    mount --rbind /sys "$XIAOZHI_ROOT/sys"
    mkdir -p "$XIAOZHI_ROOT$XIAOZHI_BIND"
    mount --bind "$XIAOZHI_BIND" "$XIAOZHI_ROOT$XIAOZHI_BIND"
    exec chroot "$XIAOZHI_ROOT" "$@"' in_root "$@"
}
