# shellcheck shell=bash
# Sourced by .ci/arm and .ci/deploy (root): qemu-user-static registered with binfmt_misc, so
# that this amd64 machine executes aarch64 binaries directly, in containers too.
#
#   binfmt_aarch64_on    installs qemu-user-static when missing, mounts binfmt_misc when needed,
#                        registers the package's qemu-aarch64 entry unless one is there, and
#                        fails unless it is enabled
#   binfmt_aarch64_off   removes the entry again if binfmt_aarch64_on added it
binfmt_added=false

binfmt_aarch64_on() {
    if ! command -v qemu-aarch64-static >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-user-static >/dev/null 2>&1 || {
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-user-static >/dev/null
        }
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || {
            echo "cannot mount binfmt_misc (a container needs --privileged)" >&2
            return 1
        }
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        # The package's own entry; flag F: the kernel opens the emulator now, so it also runs
        # inside containers and chroots.
        cat /usr/lib/binfmt.d/qemu-aarch64.conf >/proc/sys/fs/binfmt_misc/register
        binfmt_added=true
    fi
    grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 || {
        echo "the binfmt_misc entry qemu-aarch64 is disabled: echo 1 > /proc/sys/fs/binfmt_misc/qemu-aarch64" >&2
        return 1
    }
}

binfmt_aarch64_off() {
    if $binfmt_added; then
        echo -1 >/proc/sys/fs/binfmt_misc/qemu-aarch64
        binfmt_added=false
    fi
}
