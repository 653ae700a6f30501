#!/bin/bash
# ftp6proxy end-to-end lab: four network namespaces, a stateful nftables gateway that
# queues FTP control packets to NFQUEUE 10004, and FTP servers. Documentation addresses only.
#
#   f6p-client  2001:db8:1::10/64 192.0.2.10/24     --+
#   f6p-gw      2001:db8:1::1 192.0.2.1  (client side) |  forward: policy drop,
#               2001:db8:2::1 198.51.100.1 (server)    |  holes = @ftp6proxy6 / @ftp6proxy4
#               2001:db8:3::1 203.0.113.1  (third)     |
#   f6p-server  2001:db8:2::21/64 198.51.100.21/24  --+  vsftpd :21, pyftpdlib :2121,
#                                                        hostile :2122, probe listener :50999,
#                                                        FTPS with CCC :2123
#   f6p-third   2001:db8:3::99/64 203.0.113.99/24        recorder on 50500-50509
#
# Usage: lab.sh up | down | status | exec NS CMD...   (as root; NS may omit the f6p- prefix)
# State (PIDs, logs, server files): $F6P_LAB_STATE, default /run/f6p-lab.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${F6P_LAB_STATE:-/run/f6p-lab}
NSS=(f6p-client f6p-gw f6p-server f6p-third)
QUEUE=10004
FTP_PORTS=21,2121,2122
RECORDER_PORTS=(50500 50501 50502 50503 50504 50505 50506 50507 50508 50509)
PROBE_PORT=50999
SERVICES=(vsftpd pyftpd hostile third probe ftps)
# ftps_ccc_server.py: explicit FTPS with CCC, passive ports 50700-50799, a self-signed
# certificate for the server's documentation addresses made at `up`.
FTPS_PORT=2123

say() { echo "lab: $*" >&2; }
die() { say "$*"; exit 1; }

pick_python() {
    local py
    for py in "$(command -v python3 || true)" /usr/bin/python3; do
        [ -n "$py" ] && "$py" -c 'import pyftpdlib' 2>/dev/null && { echo "$py"; return; }
    done
    die "no python3 with pyftpdlib: run tests/lab/install-deps"
}

ns_exists() { [ -e "/run/netns/$1" ]; }

# ---------------------------------------------------------------- down
alive() { # PID: running and not a zombie (PID 1 of a container may not reap orphans)
    local st
    st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "$st" != Z ]
}

kill_tree() { # PID: the process group we started with setsid
    local pid=$1 i
    alive "$pid" || return 0
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 20); do
        alive "$pid" || return 0
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
}

down() {
    local s ns pid
    for s in "${SERVICES[@]}"; do
        if [ -f "$STATE/$s.pid" ]; then
            kill_tree "$(cat "$STATE/$s.pid")"
            rm -f "$STATE/$s.pid"
        fi
    done
    for ns in "${NSS[@]}"; do
        ns_exists "$ns" || continue
        # Anything still running inside the lab's namespaces (a server child, a test
        # client, a daemon that entered f6p-gw) would keep the namespace alive.
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            say "killing leftover pid $pid in $ns: $(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null | cut -c1-80)"
            kill -KILL "$pid" 2>/dev/null || true
        done
        ip netns del "$ns" 2>/dev/null || true
    done
    # Server files and logs live in $STATE; keep the logs of the last run for post-mortems.
    rm -rf "$STATE/srv" "$STATE/empty" "$STATE/tls"
}

# ---------------------------------------------------------------- up
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

mk_ns() {
    local ns=$1
    ip netns add "$ns"
    nsx "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
    ip -n "$ns" link set lo up
}

# link NS_A IF_A NS_B IF_B
link() {
    ip link add "$2" netns "$1" type veth peer name "$4" netns "$3"
    ip -n "$1" link set "$2" up
    ip -n "$3" link set "$4" up
}

addr() { # NS IF ADDR6 ADDR4
    ip -n "$1" addr add "$3" dev "$2" nodad
    ip -n "$1" addr add "$4" dev "$2"
}

host() { # NS ADDR6 ADDR4 GW6 GW4
    addr "$1" eth0 "$2" "$3"
    ip -n "$1" -6 route add default via "$4"
    ip -n "$1" -4 route add default via "$5"
}

firewall() {
    nsx f6p-gw nft -f - <<NFT
table inet filter {
    counter f6p_dropped { }
    set ftp6proxy6 { type ipv6_addr . ipv6_addr . inet_service; flags timeout; }
    set ftp6proxy4 { type ipv4_addr . ipv4_addr . inet_service; flags timeout; }
    chain forward {
        type filter hook forward priority 0; policy drop;
        ct state established,related accept
        ct state invalid drop
        icmp type { echo-request, echo-reply, destination-unreachable, time-exceeded, parameter-problem } accept
        icmpv6 type { echo-request, echo-reply, destination-unreachable, packet-too-big, time-exceeded, parameter-problem } accept
        tcp dport { 21, 2121, 2122 } ct state new accept
        tcp dport $FTPS_PORT ct state new accept
        # A hole is used up by the first packet of its data connection (its slot then
        # frees at once); a connection let through once keeps going (a SYN sent again).
        ct state new ct status confirmed accept
        ip6 saddr . ip6 daddr . tcp dport @ftp6proxy6 ct state new delete @ftp6proxy6 { ip6 saddr . ip6 daddr . tcp dport } accept
        ip saddr . ip daddr . tcp dport @ftp6proxy4 ct state new delete @ftp6proxy4 { ip saddr . ip daddr . tcp dport } accept
        counter name f6p_dropped drop
    }
}
NFT
    # This kernel has no nft native queue expression: iptables-nft's NFQUEUE target does
    # it. mangle FORWARD (priority -150) runs before the filter forward chain (0).
    # --queue-bypass: no daemon bound => control packets pass, data stays closed.
    local ipt dir
    for ipt in iptables ip6tables; do
        for dir in --dports --sports; do
            nsx f6p-gw "$ipt" -t mangle -A FORWARD -p tcp -m multiport "$dir" "$FTP_PORTS" \
                -j NFQUEUE --queue-num "$QUEUE" --queue-bypass
        done
        for dir in --dport --sport; do
            nsx f6p-gw "$ipt" -t mangle -A FORWARD -p tcp "$dir" "$FTPS_PORT" \
                -j NFQUEUE --queue-num "$QUEUE" --queue-bypass
        done
    done
}

start_bg() { # NAME NS CMD... : own session/process group, pid in $STATE/NAME.pid
    local name=$1 ns=$2; shift 2
    setsid ip netns exec "$ns" "$@" >"$STATE/$name.log" 2>&1 </dev/null &
    echo $! >"$STATE/$name.pid"
}

server_files() {
    local srv=$STATE/srv ftpuser
    mkdir -p "$srv/ftp/incoming" "$srv/py/incoming" "$STATE/empty"
    chmod 755 "$srv" "$srv/ftp" "$STATE/empty"
    chown root:root "$srv/ftp" "$STATE/empty"
    head -c $((20 * 1024 * 1024)) /dev/urandom >"$srv/ftp/big.bin"
    echo "hello from the ftp6proxy lab" >"$srv/ftp/hello.txt"
    seq 1 1000 >"$srv/ftp/small.txt"
    chmod 644 "$srv/ftp/"*.*
    for f in big.bin hello.txt small.txt; do ln "$srv/ftp/$f" "$srv/py/$f"; done
    if id ftp >/dev/null 2>&1; then ftpuser=ftp; else ftpuser=nobody; fi
    echo "$ftpuser" >"$STATE/ftpuser"
    chown "$ftpuser" "$srv/ftp/incoming"
    chmod 777 "$srv/py/incoming"
}

ftps_files() { # the FTPS server's files and its throwaway certificate
    local srv=$STATE/srv/ftps tls=$STATE/tls
    mkdir -p "$srv/incoming" "$tls"
    head -c $((4 * 1024 * 1024)) /dev/urandom >"$srv/ccc.bin"
    echo "hello from the ftp6proxy lab's FTPS server" >"$srv/hello.txt"
    sha256sum "$srv/ccc.bin" | cut -d' ' -f1 >"$STATE/ftps-ccc.bin.sha256"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
        -subj "/CN=ftps.example.net" \
        -addext "subjectAltName=DNS:ftps.example.net,IP:2001:db8:2::21,IP:198.51.100.21" \
        -keyout "$tls/key.pem" -out "$tls/cert.pem" 2>"$tls/openssl.log" ||
        die "openssl req failed: $(cat "$tls/openssl.log")"
    chmod 600 "$tls/key.pem"
}

vsftpd_conf() {
    cat >"$STATE/vsftpd.conf" <<CONF
listen=NO
listen_ipv6=YES
listen_port=21
background=NO
anonymous_enable=YES
local_enable=NO
no_anon_password=YES
anon_root=$STATE/srv/ftp
ftp_username=$(cat "$STATE/ftpuser")
nopriv_user=nobody
write_enable=YES
anon_upload_enable=YES
anon_mkdir_write_enable=YES
anon_other_write_enable=YES
anon_umask=022
pasv_enable=YES
pasv_min_port=50000
pasv_max_port=50100
port_enable=YES
connect_from_port_20=YES
ftp_data_port=20
connect_timeout=3
accept_timeout=10
data_connection_timeout=30
idle_session_timeout=120
secure_chroot_dir=$STATE/empty
seccomp_sandbox=NO
isolate=NO
isolate_network=NO
xferlog_enable=YES
vsftpd_log_file=$STATE/vsftpd-xfer.log
log_ftp_protocol=YES
dual_log_enable=YES
xferlog_file=$STATE/vsftpd-xferlog.log
use_localtime=NO
ftpd_banner=ftp6proxy lab vsftpd
CONF
}

wait_listen() { # NS PORT...
    local ns=$1 p i; shift
    for p in "$@"; do
        for i in $(seq 1 50); do
            nsx "$ns" ss -Hltn "sport = :$p" | grep -q . && break
            [ "$i" = 50 ] && die "nothing listens on $ns port $p (see $STATE/*.log)"
            sleep 0.2
        done
    done
}

up() {
    if status >/dev/null 2>&1; then
        say "already up"
        return 0
    fi
    down
    mkdir -p "$STATE"
    local py vsftpd
    py=$(pick_python)
    vsftpd=$(command -v vsftpd || echo /usr/sbin/vsftpd)
    [ -x "$vsftpd" ] || die "vsftpd not installed: run tests/lab/install-deps"

    for ns in "${NSS[@]}"; do mk_ns "$ns"; done
    nsx f6p-gw sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
    link f6p-client eth0 f6p-gw to-client
    link f6p-server eth0 f6p-gw to-server
    link f6p-third eth0 f6p-gw to-third
    addr f6p-gw to-client 2001:db8:1::1/64 192.0.2.1/24
    addr f6p-gw to-server 2001:db8:2::1/64 198.51.100.1/24
    addr f6p-gw to-third 2001:db8:3::1/64 203.0.113.1/24
    host f6p-client 2001:db8:1::10/64 192.0.2.10/24 2001:db8:1::1 192.0.2.1
    host f6p-server 2001:db8:2::21/64 198.51.100.21/24 2001:db8:2::1 198.51.100.1
    host f6p-third 2001:db8:3::99/64 203.0.113.99/24 2001:db8:3::1 203.0.113.1
    firewall

    server_files
    ftps_files
    vsftpd_conf
    : >"$STATE/third-connections.log"
    : >"$STATE/probe-connections.log"
    start_bg vsftpd f6p-server "$vsftpd" "$STATE/vsftpd.conf"
    start_bg pyftpd f6p-server "$py" "$HERE/pyftpd_server.py" "$STATE/srv/py" 2121
    start_bg hostile f6p-server "$py" -u "$HERE/hostile_server.py" 2122
    start_bg probe f6p-server "$py" "$HERE/recorder.py" "$STATE/probe-connections.log" "$PROBE_PORT"
    start_bg third f6p-third "$py" "$HERE/recorder.py" "$STATE/third-connections.log" "${RECORDER_PORTS[@]}"
    start_bg ftps f6p-server "$py" -u "$HERE/ftps_ccc_server.py" --root "$STATE/srv/ftps" \
        --cert "$STATE/tls/cert.pem" --key "$STATE/tls/key.pem" --port "$FTPS_PORT"
    wait_listen f6p-server 21 2121 2122 "$PROBE_PORT" "$FTPS_PORT"
    wait_listen f6p-third "${RECORDER_PORTS[@]}"
    say "up (state in $STATE)"
}

# ---------------------------------------------------------------- status
status() {
    local ok=0 ns s pid
    for ns in "${NSS[@]}"; do
        if ns_exists "$ns"; then echo "netns $ns: present"; else echo "netns $ns: MISSING"; ok=1; fi
    done
    for s in "${SERVICES[@]}"; do
        pid=$(cat "$STATE/$s.pid" 2>/dev/null || true)
        if [ -n "$pid" ] && alive "$pid"; then
            echo "service $s: running (pid $pid)"
        else
            echo "service $s: NOT running"; ok=1
        fi
    done
    if ns_exists f6p-gw; then
        if nsx f6p-gw nft list set inet filter ftp6proxy6 >/dev/null 2>&1 &&
            nsx f6p-gw nft list set inet filter ftp6proxy4 >/dev/null 2>&1; then
            echo "firewall: sets present"
        else
            echo "firewall: sets MISSING"; ok=1
        fi
        if grep -qw "$QUEUE" <(nsx f6p-gw cat /proc/net/netfilter/nfnetlink_queue 2>/dev/null | awk '{print $1}'); then
            echo "nfqueue $QUEUE: bound (a daemon is attached)"
        else
            echo "nfqueue $QUEUE: not bound (control packets bypass, data closed)"
        fi
    fi
    return $ok
}

# ---------------------------------------------------------------- main
[ "$(id -u)" -eq 0 ] || die "must run as root"
cmd=${1:-}
shift || true
case "$cmd" in
up) up ;;
down) down; say "down" ;;
status) status ;;
exec)
    [ $# -ge 2 ] || die "usage: lab.sh exec NS CMD..."
    ns=$1; shift
    case "$ns" in f6p-*) ;; *) ns=f6p-$ns ;; esac
    exec ip netns exec "$ns" "$@"
    ;;
*) echo "usage: $0 up|down|status|exec NS CMD..." >&2; exit 2 ;;
esac
