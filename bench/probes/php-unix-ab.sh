#!/bin/bash
# PHP "hello" (test/fixtures/php/index.php) to one php-fpm on a Unix socket (pm static, 8 children), through two
# Portico builds A and B (two worktrees, each built: `npm ci`, `npx tsc -p tsconfig.json`) and nginx `fastcgi_pass
# unix:` (upstream keepalive 8, fastcgi_keep_conn on), in turn for ROUNDS rounds: the proxy on CPU 0, FPM and wrk
# on CPU 1. Per proxy and round: `wrk -t1 -c32 -d2s` to warm up, then the proxy worker's utime and stime from
# /proc/PID/stat over `wrk -t1 -c32 -d5s`, printed as CPU-µs per request; Portico's nativeAnswers from /status.
# Not a test: it prints figures. Run under the bench lock, e.g.
#   flock /work/bench.lock bench/probes/php-unix-ab.sh /path/to/main /path/to/branch
# ORDER="B A nginx" changes the order within a round; ROUNDS (default 3). Ports 29310-29339 on 127.0.0.1.
# nginx opens an FPM connection per request in flight: with 8 children its extra ones wait in FPM's accept queue,
# so wrk reports some timeouts for it (printed).
set -u
A=${1:?usage: php-unix-ab.sh WORKTREE_A WORKTREE_B}
B=${2:?usage: php-unix-ab.sh WORKTREE_A WORKTREE_B}
ROUNDS=${ROUNDS:-3}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DOCROOT=$ROOT/test/fixtures/php
FPM=$(ls /usr/sbin/php-fpm* 2>/dev/null | head -1)
T=$(mktemp -d /tmp/php-unix-ab.XXXXXX)
trap 'rm -rf "$T"' EXIT
chmod 755 "$T" # nginx and FPM workers run as nobody: the socket must be reachable
mkdir -p "$T/nginx"
cat > "$T/fpm.conf" <<EOF
[global]
error_log = $T/fpm.log
pid = $T/fpm.pid
daemonize = no
[www]
listen = $T/fpm.sock
listen.mode = 0666
$([ "$(id -u)" = 0 ] && printf 'user = nobody\ngroup = nogroup\n')
pm = static
pm.max_children = 8
catch_workers_output = no
clear_env = yes
EOF
for side in A B; do
  port=$([ $side = A ] && echo 29310 || echo 29320)
  cat > "$T/portico-$side.yaml" <<EOF
workers: 1
listeners: [{ address: 127.0.0.1:$port }]
upstreams:
  php: { targets: [unix:$T/fpm.sock], max_connections: 8, keepalive: { max_idle: 8 }, queue: { size: 4096, timeout: 30s } }
routes:
  - match: { path_regex: '\.php\$' }
    fastcgi: { upstream: php, root: $DOCROOT, index: index.php }
log: { level: warn, access: false }
admin: { address: 127.0.0.1:$((port + 9)) }
timeouts: { shutdown_grace: 2s }
EOF
done
cat > "$T/nginx/nginx.conf" <<EOF
worker_processes 1; pid nginx.pid; error_log $T/nginx/error.log; events { worker_connections 4096; }
http {
  access_log off; client_body_temp_path tmp_body; fastcgi_temp_path tmp_fastcgi; proxy_temp_path tmp_proxy; uwsgi_temp_path tmp_uwsgi; scgi_temp_path tmp_scgi;
  upstream php { server unix:$T/fpm.sock; keepalive 8; }
  server { listen 127.0.0.1:29330; root $DOCROOT;
    location ~ \\.php\$ { fastcgi_pass php; fastcgi_keep_conn on; fastcgi_index index.php; include /etc/nginx/fastcgi_params; fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name; }
  }
}
EOF
uptime
taskset -c 1 "$FPM" -n -F $([ "$(id -u)" = 0 ] && echo -R) -y "$T/fpm.conf" -p "$T" > "$T/fpm.out" 2>&1 & F=$!
for i in $(seq 1 100); do [ -S "$T/fpm.sock" ] && break; sleep 0.1; done
ready() { for i in $(seq 1 200); do curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$1/index.php" && return 0; sleep 0.05; done; return 1; }
warm() { taskset -c 1 wrk -t1 -c32 -d2s "http://127.0.0.1:$1/index.php" > /dev/null; }
measure() { # label port worker-pid
  a=$(awk '{print $14, $15}' /proc/$3/stat)
  taskset -c 1 wrk -t1 -c32 -d5s "http://127.0.0.1:$2/index.php" > "$T/wrk.out"
  b=$(awk '{print $14, $15}' /proc/$3/stat)
  n=$(grep "requests in" "$T/wrk.out" | awk '{print $1}')
  e=$(grep -E "Non-2xx|Socket errors" "$T/wrk.out" | tr '\n' ' ')
  tick=$(getconf CLK_TCK)
  echo "$1 $a $b $n" | awk -v e="$e" -v tick="$tick" '{u=($4-$2)*1e6/tick/$6; s=($5-$3)*1e6/tick/$6; printf "%-6s %d req (%.0f/s), user %.1f sys %.1f total %.1f CPU-us/req %s\n", $1, $6, $6/5, u, s, u+s, e}'
}
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r"
  for side in ${ORDER:-A B nginx}; do
    if [ "$side" = nginx ]; then
      taskset -c 0 nginx -p "$T/nginx" -c "$T/nginx/nginx.conf" -g 'daemon off;' & P=$!
      ready 29330 || { echo "nginx not ready"; kill $P; wait $P 2>/dev/null; continue; }
      warm 29330
      measure nginx 29330 "$(pgrep -P $P | head -1)"
    else
      dir=$([ "$side" = A ] && echo "$A" || echo "$B")
      port=$([ "$side" = A ] && echo 29310 || echo 29320)
      (cd "$dir" && exec taskset -c 0 node bin/portico.js start -c "$T/portico-$side.yaml" > "$T/portico-$side.log" 2>&1) & P=$!
      ready $port || { echo "$side not ready"; kill $P; wait $P 2>/dev/null; continue; }
      warm $port
      # the serving worker: the child that has worked (the other is the standby worker)
      W=$(for w in $(pgrep -P $P); do echo "$(awk '{print $14 + $15}' /proc/$w/stat) $w"; done | sort -n | tail -1 | cut -d' ' -f2)
      measure "$side" $port "$W"
      curl -s "http://127.0.0.1:$((port + 9))/status" | node -e 'let s="";process.stdin.on("data",(d)=>(s+=d)).on("end",()=>console.log("       nativeAnswers", JSON.parse(s).workers.map((w)=>w.nativeAnswers??0).join(",")))'
    fi
    kill $P; wait $P 2>/dev/null
  done
done
kill $F; wait $F 2>/dev/null
uptime
