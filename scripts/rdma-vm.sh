#!/usr/bin/env bash
# rdma-vm.sh — real RDMA verbs (Soft-RoCE, rdma_rxe) on machines without RDMA hardware: a small Debian
# VM, built once and cached, booted under QEMU for one command at a time.
#
#   scripts/rdma-vm.sh build              build the cached image (root filesystem, kernel, initramfs)
#   scripts/rdma-vm.sh run [--] CMD...    boot, bring up rxe0, run CMD (with sh -c) in the current
#                                         folder, print its output, power off; exit with CMD's status
#   scripts/rdma-vm.sh check              exit 0 if this machine can build and boot the VM, else say why
#
# In the guest: the project folder (the git top level of the current folder, else the current folder)
# is shared read-write at the same path as on the host (also below /tmp), /opt/swift (the toolchain, if present) read-only
# at the same path; /tmp, /run and /dev/shm are fresh tmpfs; the device rxe0 sits on a dummy interface
# rdma0 with 10.233.0.1/24 (librdmacm needs an address; rxe on lo serves raw verbs only). The VM has no
# network card: nothing leaves it. SWCCL_* variables of the caller are passed on. The command's
# standard output and error are files in the guest (not terminals), printed when the VM has stopped.
#
# Environment:
#   SWCCL_VM_CACHE=$HOME/.cache/swccl-rdma-vm   where the image lives (rebuilt when this recipe changes)
#   SWCCL_VM_MEMORY=2048  SWCCL_VM_CPUS=2       guest size
#   SWCCL_VM_TIMEOUT=1800                       seconds before the VM is killed (exit status 124)
#   SWCCL_VM_SHARE="..."                        extra host folders to share read-only at the same path
# Built from the facts in shared/notes/rdma-soft-roce-vm.md: TCG (no usable KVM here), the Debian kernel
# booted directly as an ELF vmlinux (PVH), root filesystem over virtio-9p below a tmpfs overlay.
set -euo pipefail

RECIPE=4  # bump when the image's contents or layout change: cached images are rebuilt
CACHE="${SWCCL_VM_CACHE:-$HOME/.cache/swccl-rdma-vm}"
SUITE=bookworm
PACKAGES=linux-image-amd64,rdma-core,ibverbs-utils,ibverbs-providers,perftest,rdmacm-utils,iproute2,kmod,procps,busybox-static,libnuma1,python3
log() { printf '[rdma-vm %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "$*"; exit 2; }

# ---------------------------------------------------------------- host requirements
why_not() {
    [ "$(uname -m)" = x86_64 ] || { echo "not an x86_64 host"; return; }
    [ "$(id -u)" -eq 0 ] || command -v sudo >/dev/null || { echo "needs root (or sudo) to build the root filesystem"; return; }
    command -v apt-get >/dev/null || { echo "not a Debian-like host (no apt-get) to build the image"; return; }
    echo ""
}

host_packages() {
    local missing=()
    command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
    command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
    command -v cpio >/dev/null || missing+=(cpio)
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}" >&2 \
        || { $sudo apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}" >&2; }
}

# The Debian mirror the host's apt uses (never a name written into the repository).
mirror() {
    local m
    m=$(grep -hE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | grep -oE 'https?://[^ ]*/debian/?( |$)' | grep -v security | head -1 | tr -d ' ')
    echo "${m:-http://deb.debian.org/debian}"
}

# ---------------------------------------------------------------- build
build() {
    [ -f "$CACHE/ready-$RECIPE" ] && return 0
    local why; why=$(why_not); [ -z "$why" ] || die "cannot build the VM: $why"
    host_packages || die "cannot install qemu-system-x86, mmdebstrap and cpio"
    local t0=$SECONDS sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
    if [ ! -f "$CACHE/rootfs-$RECIPE" ]; then
        # Only what this script puts there: SWCCL_VM_CACHE may name a folder shared with others.
        mkdir -p "$CACHE"
        $sudo rm -rf "$CACHE/rootfs" "$CACHE"/rootfs-* "$CACHE"/ready-* "$CACHE/vmlinux" "$CACHE/initramfs" \
            "$CACHE/initramfs.cpio.gz" "$CACHE/kernel-version"
        log "root filesystem ($SUITE, minbase + rdma-core + kernel) from $(mirror)"
        # update-initramfs is diverted: the VM boots with its own tiny initramfs.
        $sudo mmdebstrap --quiet --variant=minbase --include="$PACKAGES" \
            --essential-hook='chroot "$1" dpkg-divert --local --rename --add /usr/sbin/update-initramfs && ln -s /bin/true "$1/usr/sbin/update-initramfs"' \
            "$SUITE" "$CACHE/rootfs" "$(mirror)" >&2 || die "mmdebstrap failed"
        touch "$CACHE/rootfs-$RECIPE"
    fi
    rm -rf "$CACHE/initramfs"
    local kver
    kver=$(basename "$(ls -d "$CACHE"/rootfs/lib/modules/* | head -1)")
    log "kernel $kver: extracting the ELF vmlinux (booted directly, PVH)"
    python3 - "$CACHE/rootfs/boot/vmlinuz-$kver" "$CACHE/vmlinux" <<'EOF'
import lzma, sys
data = open(sys.argv[1], "rb").read()
at = data.find(b"\xfd7zXZ\x00")
if at < 0:
    sys.exit("no xz payload in " + sys.argv[1])
out = lzma.LZMADecompressor().decompress(data[at:])
if out[:4] != b"\x7fELF":
    sys.exit("the payload is not an ELF kernel")
open(sys.argv[2], "wb").write(out)
EOF
    log "initramfs: static busybox, virtio 9p and overlay modules"
    local ird="$CACHE/initramfs" mods
    mkdir -p "$ird/bin" "$ird/lib/modules" "$ird/newroot" "$ird/lower" "$ird/rw" "$ird/proc" "$ird/sys" "$ird/dev"
    cp "$CACHE/rootfs/bin/busybox" "$ird/bin/busybox"
    # The guest's own modprobe resolves the dependencies (the host may have no kmod).
    mods=$(for m in virtio_pci 9pnet_virtio 9p overlay; do $sudo chroot "$CACHE/rootfs" /sbin/modprobe -S "$kver" --show-depends "$m"; done | awk '$1 == "insmod" && !seen[$2]++ { print $2 }')
    : >"$ird/modules"
    for m in $mods; do
        cp "$CACHE/rootfs$m" "$ird/lib/modules/"
        echo "/lib/modules/$(basename "$m")" >>"$ird/modules"
    done
    cat >"$ird/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /modules); do insmod "$m" 2>/dev/null; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose rootfs /lower || { echo "no root filesystem"; poweroff -f; }
mount -t tmpfs -o size=512m tmpfs /rw && mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot || { echo "no overlay"; poweroff -f; }
mkdir -p /newroot/mnt/ctl
mount -t 9p -o trans=virtio,version=9p2000.L ctl /newroot/mnt/ctl
# Host folders at their own paths: tag shareN, path in /newroot/mnt/ctl/shares (N path mode).
while read -r n path mode; do
    mkdir -p "/newroot$path"
    mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,$mode "share$n" "/newroot$path"
done < /newroot/mnt/ctl/shares
umount /proc /sys; umount /dev 2>/dev/null
exec switch_root /newroot /bin/sh /mnt/ctl/guest-init
EOF
    chmod +x "$ird/init"
    (cd "$ird" && find . | cpio --quiet -o -H newc | gzip -1 >"$CACHE/initramfs.cpio.gz") || die "cannot pack the initramfs"
    echo "$kver" >"$CACHE/kernel-version"
    touch "$CACHE/ready-$RECIPE"
    log "image ready in $((SECONDS - t0)) s: $CACHE"
}

# ---------------------------------------------------------------- run
run() {
    [ "${1:-}" = "--" ] && shift
    [ $# -gt 0 ] || die "run: which command?"
    build
    local top cwd i=0 status
    ctl=$(mktemp -d /tmp/swccl-rdma-vm.XXXXXX)
    trap 'rm -rf "${ctl:-}"' EXIT
    cwd=$(pwd)
    top=$(git rev-parse --show-toplevel 2>/dev/null || pwd)
    local args=(-fsdev "local,id=rootfs,path=$CACHE/rootfs,security_model=passthrough,readonly=on"
        -device virtio-9p-pci,fsdev=rootfs,mount_tag=rootfs
        -fsdev "local,id=ctl,path=$ctl,security_model=none"
        -device virtio-9p-pci,fsdev=ctl,mount_tag=ctl)
    : >"$ctl/shares"
    share() { # PATH rw|ro
        args+=(-fsdev "local,id=share$i,path=$1,security_model=none$(if [ "$2" = ro ]; then echo ,readonly=on; fi)"
            -device "virtio-9p-pci,fsdev=share$i,mount_tag=share$i")
        echo "$i $1 $2" >>"$ctl/shares"
        i=$((i + 1))
    }
    share "$top" rw
    [ -d /opt/swift ] && share /opt/swift ro
    for extra in ${SWCCL_VM_SHARE:-}; do share "$extra" ro; done
    # The command, run in the same folder with the caller's SWCCL_* settings. POSIX single quotes
    # (the guest's sh is dash: no $'...').
    squote() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }
    {
        echo "cd $(squote "$cwd") || exit 127"
        { env | grep -E '^SWCCL_[A-Z0-9_]*=' | grep -v '^SWCCL_VM_' || true; } | while IFS= read -r kv; do echo "export $(squote "$kv")"; done
        echo "sh -c $(squote "$*")"
    } >"$ctl/command"
    cat >"$ctl/guest-init" <<'EOF'
export PATH=/opt/swift/usr/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
# Shares below the folders that get a fresh tmpfs (a project cloned under /tmp) are moved aside and
# back, or the tmpfs would hide them.
mkdir -p /mnt/keep
while read -r n path mode; do
    case "$path" in /tmp/*|/run/*|/dev/shm/*) mkdir -p "/mnt/keep/$n" && mount --move "$path" "/mnt/keep/$n" ;; esac
done </mnt/ctl/shares
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp; mount -t tmpfs tmpfs /run
while read -r n path mode; do
    case "$path" in /tmp/*|/run/*|/dev/shm/*) mkdir -p "$path" && mount --move "/mnt/keep/$n" "$path" ;; esac
done </mnt/ctl/shares
hostname rdma-vm; ip link set lo up
ulimit -l unlimited; ulimit -n 65536
modprobe -a ib_uverbs rdma_ucm rdma_rxe
ip link add rdma0 type dummy && ip addr add 10.233.0.1/24 dev rdma0 && ip link set rdma0 up
rdma link add rxe0 type rxe netdev rdma0 || echo "rdma-vm: could not create rxe0" >>/mnt/ctl/stderr
# Output into files of the shared control folder (not a serial line: programs see no terminal).
sh /mnt/ctl/command >>/mnt/ctl/stdout 2>>/mnt/ctl/stderr </dev/null
echo $? >/mnt/ctl/status
sync
echo o >/proc/sysrq-trigger
sleep 10
EOF
    touch "$ctl/stdout" "$ctl/stderr"
    local accel=tcg,thread=multi
    # KVM only where the CPU offers hardware virtualisation (a paravirtual /dev/kvm alone crawls).
    if [ -w /dev/kvm ] && grep -qE '\b(vmx|svm)\b' /proc/cpuinfo; then accel=kvm; fi
    set +e
    timeout -k 10 "${SWCCL_VM_TIMEOUT:-1800}" qemu-system-x86_64 -accel "$accel" -cpu max \
        -m "${SWCCL_VM_MEMORY:-2048}" -smp "${SWCCL_VM_CPUS:-2}" \
        -nodefaults -no-user-config -display none -no-reboot \
        -kernel "$CACHE/vmlinux" -initrd "$CACHE/initramfs.cpio.gz" \
        -append "console=ttyS0 quiet panic=-1 rdinit=/init mitigations=off" \
        -serial "file:$ctl/console" \
        "${args[@]}" </dev/null >"$ctl/qemu.log" 2>&1
    status=$?
    set -e
    cat "$ctl/stdout"
    cat "$ctl/stderr" >&2
    if [ -s "$ctl/status" ]; then
        exit "$(cat "$ctl/status")"
    fi
    log "the VM ended without the command's status (qemu exit $status); console and qemu output:"
    for f in "$ctl/console" "$ctl/qemu.log"; do tail -n 20 "$f" >&2; done
    exit $([ "$status" -eq 124 ] && echo 124 || echo 125)
}

case "${1:-}" in
    build) build ;;
    run) shift; run "$@" ;;
    check)
        why=$(why_not)
        if [ -n "$why" ]; then echo "rdma-vm: unavailable: $why"; exit 1; fi
        echo "rdma-vm: available (image $([ -f "$CACHE/ready-$RECIPE" ] && echo cached || echo "not built yet") in $CACHE)" ;;
    *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
