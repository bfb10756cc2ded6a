#!/usr/bin/env bash
# Record the lab captures in this directory from real clients and servers (traffic we did not craft).
#
# Needs root and: tcpdump nginx-light redis-server redis-tools dnsmasq-base openssh-server
# openssh-client bind9-dnsutils curl openssl python3 dropbear-bin hydra slowhttptest (Debian package names).
# Everything runs inside a network namespace of its own (dpi-rec) on its loopback, with lab addresses
# 198.18.0.1 (clients) and 198.18.0.2 (servers); the namespace and every process started here are
# removed on exit, even on failure. Run from the repository root, for every capture or for the sections
# named (http tls ssh ssh_dropbear ssh_openssh slow_read redis dns):
#     sudo tests/data/pcaps/lab/record.sh [SECTION...]
# SSHD names the OpenSSH server binary (default /usr/sbin/sshd).
set -euo pipefail
OUT="$(cd "$(dirname "$0")" && pwd)"
SSHD="${SSHD:-/usr/sbin/sshd}"
NS=dpi-rec
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 0.3
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
in_ns() { ip netns exec "$NS" "$@"; }
# Background commands start `ip netns exec` itself (which execs the program), so $! is the program's PID.
bg() { ip netns exec "$NS" "$@" >/dev/null 2>&1 & PIDS+=("$!"); }
wait_port() {  # wait (bounded) until something listens on tcp port $1
    for _ in $(seq 50); do in_ns bash -c "exec 3<>/dev/tcp/198.18.0.2/$1" 2>/dev/null && return 0; sleep 0.1; done
    echo "nothing listens on $1" >&2; return 1
}

ip netns add "$NS"
in_ns ip link set lo up
in_ns ip addr add 198.18.0.1/32 dev lo
in_ns ip addr add 198.18.0.2/32 dev lo

record() {  # record NAME COMMAND...: capture on the namespace's loopback while COMMAND runs (FILTER: tcpdump's)
    local name="$1"; shift
    ip netns exec "$NS" tcpdump -i lo -U -s 0 -w "$OUT/$name.pcap" "${FILTER:-host 198.18.0.2}" 2>/dev/null &
    local cap=$!
    PIDS+=("$cap")
    sleep 0.5
    "$@" >/dev/null 2>&1 || true
    sleep 0.5
    kill -TERM "$cap"; wait "$cap" 2>/dev/null || true  # (background jobs ignore SIGINT)
}

# HTTP: nginx and curl
section_http() {
cat > "$WORK/nginx.conf" <<CONF
daemon off; pid $WORK/nginx.pid; error_log $WORK/error.log;
events {}
http { access_log off; client_body_temp_path $WORK; proxy_temp_path $WORK; fastcgi_temp_path $WORK;
       uwsgi_temp_path $WORK; scgi_temp_path $WORK;
       server { listen 198.18.0.2:80; location / { return 200 "hello from nginx\n"; } } }
CONF
bg nginx -c "$WORK/nginx.conf"
wait_port 80
record http_curl_nginx in_ns curl -s -m 5 -H 'Host: web.lab.example.test' http://198.18.0.2/index.html -o /dev/null
}

# TLS: openssl s_server / s_client with SNI and ALPN
section_tls() {
openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=lab.example.test -days 1 \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
bg openssl s_server -quiet -accept 198.18.0.2:8443 -cert "$WORK/cert.pem" -key "$WORK/key.pem" -alpn h2,http/1.1
wait_port 8443
record tls_openssl in_ns bash -c 'echo hello | timeout 5 openssl s_client -quiet -connect 198.18.0.2:8443 \
    -servername lab.example.test -alpn h2 2>/dev/null'
}

# SSH: sshd on a non-standard port and on the HTTP port, an ssh client that cannot log in
section_ssh() {
ssh-keygen -q -t ed25519 -N '' -f "$WORK/host_key"
mkdir -p /run/sshd
bg "$SSHD" -D -f /dev/null -h "$WORK/host_key" -o ListenAddress=198.18.0.2:2222 \
    -o ListenAddress=198.18.0.2:8080 -o PidFile="$WORK/sshd.pid"
wait_port 2222
for port in 2222 8080; do
    record "ssh_port_$port" in_ns timeout 5 ssh -p "$port" -o BatchMode=yes -o StrictHostKeyChecking=no \
        -o UserKnownHostsFile=/dev/null lab@198.18.0.2 true
done
}

# SSH password guessing: hydra (4 tasks, 60 wrong passwords) against dropbear, which refuses up to 10
# attempts on one connection
section_ssh_dropbear() {
dropbearkey -t ed25519 -f "$WORK/dropbear_key" >/dev/null 2>&1
bg dropbear -F -E -p 198.18.0.2:2223 -r "$WORK/dropbear_key"
wait_port 2223
for i in $(seq 0 59); do echo "guess$i"; done > "$WORK/passwords.txt"
record ssh_hydra_dropbear in_ns timeout 60 hydra -l root -P "$WORK/passwords.txt" -s 2223 -t 4 -I 198.18.0.2 ssh
}

# SSH guessing against OpenSSH: hydra (4 tasks, 60 wrong passwords) where passwords are asked for
# through keyboard-interactive (PAM: a prompt, then the password, then the refusal, in turns), and where
# they are sent as passwords
section_ssh_openssh() {
ssh-keygen -q -t ed25519 -N '' -f "$WORK/openssh_key"
mkdir -p /run/sshd
for i in $(seq 0 59); do echo "guess$i"; done > "$WORK/passwords.txt"
bg "$SSHD" -D -f /dev/null -h "$WORK/openssh_key" -o ListenAddress=198.18.0.2:2224 -o PermitRootLogin=yes \
    -o PidFile=none -o UsePAM=yes -o KbdInteractiveAuthentication=yes -o PasswordAuthentication=no
bg "$SSHD" -D -f /dev/null -h "$WORK/openssh_key" -o ListenAddress=198.18.0.2:2225 -o PermitRootLogin=yes \
    -o PidFile=none -o UsePAM=no -o KbdInteractiveAuthentication=no -o PasswordAuthentication=yes
wait_port 2224 && wait_port 2225
FILTER="tcp port 2224" record ssh_hydra_openssh_kbdint in_ns timeout 90 hydra -l root -P "$WORK/passwords.txt" \
    -s 2224 -t 4 -I 198.18.0.2 ssh
FILTER="tcp port 2225" record ssh_hydra_openssh in_ns timeout 90 hydra -l root -P "$WORK/passwords.txt" \
    -s 2225 -t 4 -I 198.18.0.2 ssh
}

# Slow read: slowhttptest -X against Python's HTTP server; each connection offers a window of at most
# 1 KB and reads 32 bytes every 5 s
section_slow_read() {
mkdir "$WORK/www" && head -c 16384 /dev/zero > "$WORK/www/big.bin"
bg python3 -m http.server 8000 --bind 198.18.0.2 --directory "$WORK/www"
wait_port 8000
record http_slow_read in_ns timeout 45 slowhttptest -X -c 3 -r 3 -l 28 -w 512 -y 1024 -n 5 -z 32 -k 3 -p 5 \
    -u http://198.18.0.2:8000/big.bin
}

# Redis: redis-server and redis-cli
section_redis() {
bg redis-server --bind 198.18.0.2 --port 6379 --save '' --appendonly no --protected-mode no --dir "$WORK"
wait_port 6379
record redis_cli in_ns bash -c 'redis-cli -h 198.18.0.2 SET greeting hello; redis-cli -h 198.18.0.2 GET greeting'
}

# DNS: dnsmasq and dig, over UDP and TCP
section_dns() {
bg dnsmasq -k --no-resolv --no-hosts --listen-address=198.18.0.2 --bind-interfaces --port=53 \
    --address=/lab.example.test/198.18.0.2 --pid-file="$WORK/dnsmasq.pid"
sleep 0.5
record dns_dig in_ns bash -c 'dig +time=2 +tries=1 @198.18.0.2 www.lab.example.test A;
    dig +time=2 +tries=1 +tcp @198.18.0.2 api.lab.example.test A'
}

sections=(http tls ssh ssh_dropbear ssh_openssh slow_read redis dns)
[ $# -gt 0 ] || set -- "${sections[@]}"
for section in "$@"; do "section_$section"; done

echo "recorded:"; ls -l "$OUT"/*.pcap
