#!/bin/bash
# PHP "hello" (test/fixtures/php/index.php) through ONE proxy worker, Portico (this checkout, or the one given) or
# nginx `fastcgi_pass` (upstream keepalive 8, fastcgi_keep_conn on), to one php-fpm on loopback TCP (pm static,
# 8 children): the proxy on CPU 0, FPM and wrk on CPU 1. `wrk -t1 -c$CONNS -d3s` to warm up, then over `wrk -t1
# -c$CONNS -d8s` the worker's utime and stime (/proc/PID/stat) and its context switches (/proc/PID/status), per
# request. Portico's route is the seed's `path_regex: '\.php$'`. Not a test: it prints one line. Alternate the two
# in one sitting, under the bench lock, e.g.
#   for w in nginx portico nginx portico; do flock /work/bench.lock bench/probes/php-worker-cpu.sh $w; done
# A fourth argument, a path other than /index.php (a "pretty URL" such as /blog/2026/hello), adds the front
# controller's static route (`static: { root, fallback: "/index.php?$args" }`; nginx `location / { try_files $uri
# $uri/ /index.php?$args; }`) and requests that path: the same script, reached through the fallback.
# Usage: php-worker-cpu.sh portico|nginx [CONNS (8)] [CHECKOUT (this one)] [PATH (/index.php)]. Ports 29400-29420 on 127.0.0.1.
set -u
WHO=${1:?usage: php-worker-cpu.sh portico|nginx [conns] [checkout] [path]}
CONNS=${2:-8}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CHECKOUT=${3:-$ROOT}
URLPATH=${4:-/index.php}
DOCROOT=$ROOT/test/fixtures/php
FRONT=""; TRY=""
if [ "$URLPATH" != /index.php ]; then
  FRONT="  - match: { path: / }
    static: { root: $DOCROOT, fallback: '/index.php?\$args' }"
  TRY='location / { try_files $uri $uri/ /index.php?$args; }'
fi
FPM=$(ls /usr/sbin/php-fpm* 2>/dev/null | head -1)
T=$(mktemp -d /tmp/php-worker-cpu.XXXXXX)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/nginx"
cat > "$T/fpm.conf" <<EOF2
[global]
error_log = $T/fpm.log
pid = $T/fpm.pid
daemonize = no
[www]
listen = 127.0.0.1:29400
user = nobody
group = nogroup
pm = static
pm.max_children = 8
catch_workers_output = no
clear_env = yes
EOF2
cat > "$T/portico.yaml" <<EOF2
workers: 1
listeners: [{ address: 127.0.0.1:29410 }]
upstreams:
  php: { targets: [127.0.0.1:29400], max_connections: 8, keepalive: { max_idle: 8 }, queue: { size: 4096, timeout: 30s } }
routes:
  - match: { path_regex: '\.php\$' }
    fastcgi: { upstream: php, root: $DOCROOT, index: index.php }
$FRONT
log: { level: warn, access: false }
timeouts: { shutdown_grace: 2s }
EOF2
cat > "$T/nginx/nginx.conf" <<EOF2
worker_processes 1; pid nginx.pid; error_log $T/nginx/error.log; events { worker_connections 4096; }
http {
  access_log off; client_body_temp_path tmp_body; fastcgi_temp_path tmp_fastcgi; proxy_temp_path tmp_proxy; uwsgi_temp_path tmp_uwsgi; scgi_temp_path tmp_scgi;
  upstream php { server 127.0.0.1:29400; keepalive 8; }
  server { listen 127.0.0.1:29420; root $DOCROOT; $TRY
    location ~ \.php\$ { fastcgi_pass php; fastcgi_keep_conn on; fastcgi_index index.php; include /etc/nginx/fastcgi_params; fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name; }
  }
}
EOF2
taskset -c 1 "$FPM" -y "$T/fpm.conf" -R -F & FPMPID=$!
if [ "$WHO" = portico ]; then
  taskset -c 0 node "$CHECKOUT/bin/portico.js" start -c "$T/portico.yaml" > "$T/portico.log" 2>&1 & P=$!; PORT=29410
else
  taskset -c 0 nginx -p "$T/nginx" -c "$T/nginx/nginx.conf" -g 'daemon off;' 2>/dev/null & P=$!; PORT=29420
fi
for i in $(seq 50); do curl -sf "127.0.0.1:$PORT/index.php" > /dev/null && break; sleep 0.2; done
curl -s "127.0.0.1:$PORT$URLPATH" | grep -q 'hello from php' || echo "$WHO: $URLPATH does not reach the PHP hello (figures below are not PHP's)"
sleep 0.5
W=$(pgrep -P $P | head -1) # Portico's first child is its worker; nginx's only child
taskset -c 1 wrk -t1 -c"$CONNS" -d3s "http://127.0.0.1:$PORT$URLPATH" > /dev/null
read u1 s1 < <(awk '{print $14, $15}' /proc/$W/stat); v1=$(awk '/^voluntary_ctxt/{print $2}' /proc/$W/status)
taskset -c 1 wrk -t1 -c"$CONNS" -d8s "http://127.0.0.1:$PORT$URLPATH" > "$T/wrk.txt"
read u2 s2 < <(awk '{print $14, $15}' /proc/$W/stat); v2=$(awk '/^voluntary_ctxt/{print $2}' /proc/$W/status)
REQ=$(grep -oP '^\s*\K\d+(?= requests in)' "$T/wrk.txt")
TICK=$(getconf CLK_TCK)
echo "$WHO $URLPATH -c$CONNS $(date -u +%H:%M:%S) load $(cut -d' ' -f1 /proc/loadavg): $REQ requests, $(grep -oP 'Requests/sec:\s*\K[\d.]+' "$T/wrk.txt") req/s," \
  "user $(( (u2 - u1) * 1000000 / TICK / REQ )) + sys $(( (s2 - s1) * 1000000 / TICK / REQ )) µs per request," \
  "voluntary context switches $(awk -v a=$v1 -v b=$v2 -v r=$REQ 'BEGIN{printf "%.2f", (b-a)/r}') per request, $(grep -c Non-2xx "$T/wrk.txt") non-2xx lines"
kill $P; kill $FPMPID; wait 2> /dev/null
