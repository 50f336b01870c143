#!/bin/sh
# Entrypoint of the Heex agent container.
#
# First start (no agent.toml on the state volume): enroll once with heex-installer, from
#   HEEX_SERVER          API base URL, e.g. https://heex.example.com:8443
#   HEEX_CA_FINGERPRINT  sha256:<hex> of the cloud CA (printed by `heex-cloud init`)
#   HEEX_API_KEY or HEEX_API_KEY_FILE (exactly one; a key with the enroll scope)
#   HEEX_DEVICE_NAME     optional, defaults to the container's host name
#   HEEX_LABELS          optional, comma-separated key=value pairs: "site=lyon,role=arm"
# Every start: exec heex-agent, with HEEX_API_KEY and HEEX_API_KEY_FILE removed from its
# environment. A restart with existing state never needs the key: unset or revoked is fine.
#
# HEEX_STATE_DIR (default /var/lib/heex) holds the credentials; HEEX_CONFIG_DIR (default: the
# state dir) holds agent.toml. Both on the one volume, so the configuration never outlives or
# goes missing from the credentials it points to.
#
# Exit codes: those of heex-installer while enrolling (64 usage, 69 server unreachable or
# untrusted, 73 file error, 77 key refused), 78 when a setting needed to enroll is missing,
# then those of heex-agent. Every failure is one line on stderr.
set -eu

state_dir=${HEEX_STATE_DIR:-/var/lib/heex}
config_dir=${HEEX_CONFIG_DIR:-$state_dir}
config=$config_dir/agent.toml

fail() {
    code=$1
    shift
    printf 'heex: %s\n' "$*" >&2
    exit "$code"
}

# Removes leading and trailing blanks.
trim() {
    t=$1
    t=${t#"${t%%[![:space:]]*}"}
    t=${t%"${t##*[![:space:]]}"}
    printf '%s' "$t"
}

enroll() {
    missing=
    [ -n "${HEEX_SERVER:-}" ] || missing="$missing HEEX_SERVER"
    [ -n "${HEEX_CA_FINGERPRINT:-}" ] || missing="$missing HEEX_CA_FINGERPRINT"
    [ -n "${HEEX_API_KEY:-}${HEEX_API_KEY_FILE:-}" ] || missing="$missing HEEX_API_KEY"
    if [ -n "$missing" ]; then
        fail 78 "$config does not exist, so this container must enroll, but these variables are not set:$missing; set HEEX_SERVER, HEEX_CA_FINGERPRINT and HEEX_API_KEY (or HEEX_API_KEY_FILE)"
    fi

    set -- --server "$HEEX_SERVER" --ca-fingerprint "$HEEX_CA_FINGERPRINT" \
        --config-dir "$config_dir" --state-dir "$state_dir"
    if [ -n "${HEEX_DEVICE_NAME:-}" ]; then
        set -- "$@" --name "$HEEX_DEVICE_NAME"
    fi
    if [ -n "${HEEX_LABELS:-}" ]; then
        saved_ifs=$IFS
        IFS=,
        set -f
        for label in $HEEX_LABELS; do
            label=$(trim "$label")
            if [ -n "$label" ]; then
                set -- "$@" --label "$label"
            fi
        done
        set +f
        IFS=$saved_ifs
    fi

    # The installer reads the key from the environment itself; it never prints it.
    out=$(heex-installer "$@" </dev/null 2>&1) && rc=0 || rc=$?
    if [ "$rc" -eq 0 ]; then
        printf '%s\n' "$out"
        return 0
    fi
    # Keep only the installer's one-line error (its progress lines would bury it), naming the
    # container's variables instead of the installer's flags.
    msg=$(printf '%s\n' "$out" | sed -n 's/^error: //p' | tail -n 1)
    [ -n "$msg" ] || msg=$(printf '%s\n' "$out" | tail -n 1)
    msg=$(printf '%s\n' "$msg" | sed 's/--ca-fingerprint/HEEX_CA_FINGERPRINT/g; s/--server/HEEX_SERVER/g; s/--name/HEEX_DEVICE_NAME/g')
    if [ "$rc" -eq 77 ]; then
        # "API key <id> was revoked on <date> by <who>; ask an admin for a new key": keep what
        # happened, replace the advice with what to change in this container.
        fail 77 "${msg%;*}; set HEEX_API_KEY (or HEEX_API_KEY_FILE) to an API key of an active team member, with the enroll scope, and start the container again"
    fi
    fail "$rc" "enrollment failed: $msg"
}

if [ -n "${HEEX_API_KEY:-}" ] && [ -n "${HEEX_API_KEY_FILE:-}" ]; then
    fail 64 "both HEEX_API_KEY and HEEX_API_KEY_FILE are set; set only one"
fi

if [ "$#" -gt 0 ] && [ "$1" != run ]; then
    # Any other command (e.g. `status`) goes to the agent as it is.
    unset HEEX_API_KEY HEEX_API_KEY_FILE
    exec heex-agent "$@"
fi

if [ ! -f "$config" ]; then
    enroll
fi

unset HEEX_API_KEY HEEX_API_KEY_FILE
exec heex-agent run --config "$config"
