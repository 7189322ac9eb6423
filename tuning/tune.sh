#!/usr/bin/env bash
# MonoFS host tuning for storage nodes (NVMe, io_uring) and the NFS router: prints each
# setting's current and recommended value; --apply sets the recommended values now
# (root), --persist also writes them to /etc/sysctl.d and /etc/security/limits.d.
# Explanations: tuning/README.md.
#
# usage: tuning/tune.sh [--apply] [--persist] [--role node|router|client|all] [--irq-cpus LIST]
#   --irq-cpus LIST  with --apply: pin the NIC's interrupts to these CPUs (e.g. 0-1), away
#                    from the CPUs running node shards / router workers
set -uo pipefail

apply=0 persist=0 role=all irq_cpus=""
while [ $# -gt 0 ]; do
    case "$1" in
        --apply) apply=1 ;;
        --persist) persist=1; apply=1 ;;
        --role) role="$2"; shift ;;
        --role=*) role="${1#*=}" ;;
        --irq-cpus) irq_cpus="$2"; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "tune.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
case "$role" in node|router|client|all) ;; *) echo "tune.sh: --role node|router|client|all" >&2; exit 2 ;; esac
if [ "$apply" = 1 ] && [ "$(id -u)" != 0 ]; then echo "tune.sh: --apply needs root" >&2; exit 1; fi

changed=0 differ=0
row() {  # row NAME CURRENT RECOMMENDED [NOTE]
    local mark=" "
    [ "$2" = "$3" ] || { mark="*"; differ=$((differ + 1)); }
    printf '%s %-46s %-24s %-24s %s\n' "$mark" "$1" "$2" "$3" "${4:-}"
}
norm() { tr -s ' \t' ' ' | sed 's/^ //; s/ $//'; }

printf '  %-46s %-24s %-24s %s\n' "setting" "current" "recommended" "note"

# ------------------------------------------------------------------ sysctls
sysctl_row() {  # sysctl_row KEY RECOMMENDED ROLES NOTE
    local key="$1" want="$2" roles="$3" note="$4" path cur
    case " $roles " in *" $role "*|*" all "*) ;; *) [ "$role" = all ] || return 0 ;; esac
    path="/proc/sys/${key//./\/}"
    if [ ! -e "$path" ]; then row "$key" "(absent)" "$want" "$note"; return; fi
    cur=$(norm < "$path")
    row "$key" "$cur" "$want" "$note"
    if [ "$apply" = 1 ] && [ "$cur" != "$want" ]; then
        if printf '%s' "$want" > "$path" 2>/dev/null; then changed=$((changed + 1)); else echo "  (could not set $key)"; fi
    fi
    if [ "$persist" = 1 ]; then echo "$key = $want" >> "$SYSCTL_TMP"; fi
}
SYSCTL_TMP=$(mktemp)
trap 'rm -f "$SYSCTL_TMP"' EXIT
sysctl_row kernel.io_uring_disabled 0 "node" "nodes need io_uring"
sysctl_row net.core.somaxconn 4096 "node router" "accept backlog (many client/node connections)"
sysctl_row net.core.netdev_max_backlog 16384 "node router" "RX backlog before drops"
sysctl_row net.core.rmem_max 16777216 "node router client" "lets TCP autotuning grow to 16 MiB"
sysctl_row net.core.wmem_max 16777216 "node router client" "1 MiB READ replies in flight"
sysctl_row net.ipv4.tcp_rmem "4096 131072 16777216" "node router client" "min default max"
sysctl_row net.ipv4.tcp_wmem "4096 131072 16777216" "node router client" "min default max"
sysctl_row net.ipv4.tcp_slow_start_after_idle 0 "node router client" "bursty NFS reads restart at full window"
sysctl_row net.ipv4.tcp_notsent_lowat 131072 "router" "less queued-but-unsent data, lower latency"
sysctl_row vm.dirty_background_ratio 5 "node client" "nodes write O_DIRECT; keep others' writeback small"
sysctl_row vm.dirty_ratio 10 "node client" "bound dirty page cache (stalls)"
sysctl_row vm.swappiness 10 "node router" "keep the router's directory cache in memory"
sysctl_row sunrpc.tcp_max_slot_table_entries 128 "client" "NFS client RPC slots per transport"

# ------------------------------------------------------------------ block devices (node)
if [ "$role" = node ] || [ "$role" = all ]; then
    for q in /sys/block/*/queue; do
        dev=$(basename "$(dirname "$q")")
        case "$dev" in loop*|ram*|zram*|dm-*|md*|sr*) continue ;; esac
        [ -e "$q/scheduler" ] || continue
        rot=$(cat "$q/rotational" 2>/dev/null || echo 0)
        [ "$rot" = 0 ] || { row "$dev scheduler" "(rotational)" "-" "MonoFS nodes belong on SSD/NVMe"; continue; }
        cur=$(sed -n 's/.*\[\(.*\)\].*/\1/p' "$q/scheduler"); [ -n "$cur" ] || cur=$(cat "$q/scheduler")
        want=none
        grep -qw none "$q/scheduler" || want="$cur"
        row "$dev queue/scheduler" "$cur" "$want" "no reordering needed on NVMe; saves CPU per I/O"
        [ "$apply" = 1 ] && [ "$cur" != "$want" ] && echo "$want" > "$q/scheduler" 2>/dev/null && changed=$((changed + 1))
        cur=$(cat "$q/nr_requests")
        hw=$(cat "$q/../device/queue_depth" 2>/dev/null || echo "")
        want=1023
        [ -n "$hw" ] && [ "$hw" -lt 1023 ] 2>/dev/null && want="$hw"
        row "$dev queue/nr_requests" "$cur" "$want" "≥ the engine ring depth × shards (QD 256 per disk)"
        if [ "$apply" = 1 ] && [ "$cur" != "$want" ]; then echo "$want" > "$q/nr_requests" 2>/dev/null && changed=$((changed + 1)) || echo "  ($dev: nr_requests $want refused by the driver)"; fi
        cur=$(cat "$q/read_ahead_kb")
        row "$dev queue/read_ahead_kb" "$cur" "128" "nodes read O_DIRECT (no read-ahead); keep it small for the rest"
        [ "$apply" = 1 ] && [ "$cur" != 128 ] && echo 128 > "$q/read_ahead_kb" 2>/dev/null && changed=$((changed + 1))
        if [ -e "$q/io_poll" ]; then row "$dev queue/io_poll" "$(cat "$q/io_poll")" "$(cat "$q/io_poll")" "polled queues need nvme.poll_queues=N at boot"; fi
    done
fi

# ------------------------------------------------------------------ memlock (node)
if [ "$role" = node ] || [ "$role" = all ]; then
    cur=$(ulimit -l)
    want=unlimited
    row "RLIMIT_MEMLOCK (this shell, KiB)" "$cur" "$want" "io_uring rings + registered buffers per shard (≥ 64 MiB)"
    if [ "$persist" = 1 ]; then
        printf '# MonoFS nodes: io_uring registered memory\n* soft memlock unlimited\n* hard memlock unlimited\n' > /etc/security/limits.d/90-monofs.conf
        echo "  wrote /etc/security/limits.d/90-monofs.conf (new sessions); systemd units: LimitMEMLOCK=infinity"
    fi
fi

# ------------------------------------------------------------------ CPU and IRQs
gov=/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor
if [ -e "$gov" ]; then
    cur=$(cat "$gov")
    row "cpufreq governor" "$cur" "performance" "latency of short NFS calls"
    if [ "$apply" = 1 ] && [ "$cur" != performance ]; then
        for g in /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor; do echo performance > "$g" 2>/dev/null; done
        changed=$((changed + 1))
    fi
else
    row "cpufreq governor" "(none)" "(none)" "no cpufreq (VM): nothing to do"
fi
irqb="stopped"; pgrep -x irqbalance >/dev/null 2>&1 && irqb="running"
row "irqbalance" "$irqb" "$irqb" "with --irq-cpus: stop it, or it moves the IRQs back"
nic_irqs=$(awk -F: '/eth|ens|enp|eno|mlx|ixgbe|i40e|ice|virtio.*input|virtio.*output/ { gsub(/ /, "", $1); print $1 }' /proc/interrupts 2>/dev/null | tr '\n' ' ')
nvme_irqs=$(awk -F: '/nvme/ { gsub(/ /, "", $1); print $1 }' /proc/interrupts 2>/dev/null | wc -l)
first_nic=${nic_irqs%% *}
cur="-"; [ -n "$first_nic" ] && cur=$(cat "/proc/irq/$first_nic/smp_affinity_list" 2>/dev/null || echo "?")
row "NIC IRQ affinity (first of $(echo $nic_irqs | wc -w))" "$cur" "${irq_cpus:-$cur}" "give NIC queues CPUs apart from node shards (--irq-cpus)"
row "NVMe IRQs" "$nvme_irqs queues" "$nvme_irqs queues" "kernel-managed, one per CPU: leave them"
if [ "$apply" = 1 ] && [ -n "$irq_cpus" ]; then
    for i in $nic_irqs; do echo "$irq_cpus" > "/proc/irq/$i/smp_affinity_list" 2>/dev/null && changed=$((changed + 1)); done
fi

# ------------------------------------------------------------------ NFS clients
if [ "$role" = client ] || [ "$role" = all ]; then
    mounts=$(awk '$3 == "nfs" || $3 == "nfs4" { print $2 " " $4 }' /proc/mounts 2>/dev/null)
    if [ -z "$mounts" ]; then
        row "NFS client mounts" "(none)" "nconnect=8" "mount -o vers=3,nconnect=8,rsize=1048576,actimeo=3600,nocto"
    else
        while read -r mp opts; do
            nc=$(echo "$opts" | tr ',' '\n' | sed -n 's/^nconnect=//p'); nc=${nc:-1}
            row "mount $mp nconnect" "$nc" "8" "more TCP connections → more router workers busy"
            rs=$(echo "$opts" | tr ',' '\n' | sed -n 's/^rsize=//p')
            row "mount $mp rsize" "${rs:-?}" "1048576" "matches the 1 MiB chunk"
        done <<< "$mounts"
    fi
fi

if [ "$persist" = 1 ] && [ -s "$SYSCTL_TMP" ]; then
    { echo "# MonoFS tuning (tuning/tune.sh --persist)"; cat "$SYSCTL_TMP"; } > /etc/sysctl.d/90-monofs.conf
    echo "wrote /etc/sysctl.d/90-monofs.conf"
fi
echo
if [ "$apply" = 1 ]; then
    echo "tune.sh: applied $changed change(s); * marked $differ setting(s) that differed from recommended"
else
    echo "tune.sh: $differ setting(s) (*) differ from recommended; --apply sets them (root), --persist keeps them"
fi
exit 0
