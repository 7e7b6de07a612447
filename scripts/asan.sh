#!/usr/bin/env bash
# The native addon under AddressSanitizer: builds src/native/*.cc with -fsanitize=address into build-asan/ (g++
# directly, the same flags as binding.gyp), then runs the tests that drive the addon's TLS, relays and socket
# I/O (native accept included) with that build preloaded (node itself is not instrumented; leak checking is off, as Node's own
# allocations at exit are not ours). A sanitizer report aborts the process, which fails the test.
# Usage: bash scripts/asan.sh [build|test]   (default: both; .ci/run builds while the plain suite runs)
# The runs below are independent (ports 0, their own temporary dirs and namespaces, as the plain run's files that
# run two at once): PORTICO_ASAN_JOBS of them run at once (default 2, the plain run's concurrency), the longest
# first; each one's TAP is printed whole when it ends; the step fails when any run failed, once all have ended.
# What a run leaves out is what only JavaScript does there; the C++ path it drove stays covered by another case,
# named beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
case "$what" in all|build|test) ;; *) echo "usage: bash scripts/asan.sh [build|test]" >&2; exit 2 ;; esac

build() {
  local napi nodeinc failed=0 objs=()
  napi="$(node -p "require('node-addon-api').include_dir")"
  nodeinc="$(dirname "$(dirname "$(command -v node)")")/include/node"
  local flags=(-fPIC -fsanitize=address -fno-omit-frame-pointer -O1 -g -std=c++17 -fexceptions
    -I"$nodeinc" -I"$napi" -DNAPI_VERSION=8 -DNAPI_CPP_EXCEPTIONS -DNODE_ADDON_API_DISABLE_DEPRECATED)
  rm -rf build-asan/obj
  mkdir -p build-asan/obj
  # one g++ per source, as many at once as there are cores, then one link
  for s in addon relay io tls tls-relay l4 client-table end-bridge response-head request-head route-table fcgi-answer fcgi-request exchange script-cache; do
    while [ "$(jobs -rp | wc -l)" -ge "$(nproc)" ]; do wait -n || failed=1; done
    g++ "${flags[@]}" -c "src/native/$s.cc" -o "build-asan/obj/$s.o" &
    objs+=("build-asan/obj/$s.o")
  done
  while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || failed=1; done
  if [ "$failed" -ne 0 ]; then echo "asan: a source did not compile" >&2; return 1; fi
  g++ -shared -fsanitize=address "${objs[@]}" -o build-asan/portico_native.node
}

if [ "$what" != "test" ]; then
  build
  [ "$what" = "build" ] && exit 0
fi
if [ ! -f build-asan/portico_native.node ]; then echo "asan: no build-asan/portico_native.node (bash scripts/asan.sh build)" >&2; exit 1; fi

# curl hangs at start with libasan preloaded: the tests' curl runs without it (a shim first on PATH)
mkdir -p build-asan/bin
printf '#!/bin/sh\nunset LD_PRELOAD\nexec %s "$@"\n' "$(command -v curl)" > build-asan/bin/curl
chmod +x build-asan/bin/curl
export PATH="$PWD/build-asan/bin:$PATH"
export PORTICO_NATIVE_ADDON="$PWD/build-asan/portico_native.node"
asan_preload="$(g++ -print-file-name=libasan.so)"

RUNS=()
# run NODE_TEST_ARGS...: one `node --test` of the list (its --test-name-pattern applies to its own files only)
run() { RUNS+=("$(printf '%q ' "$@")"); }

# --- the list, longest first (seconds under ASan, one at a time, 2-core machine) ---

# FastCGI's relayed answer (fcgi-answer.cc, io.cc ioFcgiAnswer): answers relayed from a real php-fpm and a lying
# application (plain and TLS clients, bodies, backpressure, FPM killed, a client leaving) (~57 s). Left out: the lying
# and early applications again on a Unix socket (plain clients only): the same records through the same reader, and
# io.cc's Unix connect with a relayed FastCGI answer is native-unix's FastCGI case below.
run --test-name-pattern='^FastCGI relayed answers: (the same bytes|requests with a body|64 MiB|FPM killed|a client that leaves|a lying application|an application that answers)' dist/test/e2e/native-fcgi-answer.test.js
# the relays, native sockets, native accept's end and address text, splice, the TLS sessions' reads, L4 records and the
# compiles and SNI tables reloads leave behind, and the 101 check armed without SHA-1 from OpenSSL (ws-accept.h's
# fallback), driven directly (~60 s)
run dist/test/component/relay.test.js dist/test/component/relay-wakeups.test.js dist/test/component/native-io.test.js dist/test/component/native-accept-address.test.js dist/test/component/native-listen-end.test.js dist/test/component/splice.test.js dist/test/component/native-tls-io.test.js dist/test/component/l4-records.test.js dist/test/component/l4-retired.test.js dist/test/component/native-ws-accept-fallback.test.js
# the WebSocket 101 written by the addon (response-head.cc RewriteUpgrade, io.cc ioAnswerUpgrade): upgrades through a
# running worker (plain and TLS, first frames, pipelined frames, lying and vanishing peers, 1,000 in a row, a flood the
# backend never answers) (~48 s). Left out: the same upgrade from ws, Python websockets and curl: their requests are
# read by JavaScript, the addon sees a backend's 101 as in the first case (plain and TLS, ws's 101), and 101s of any
# fields are the fuzz run's (native-upgrade-head below).
run --test-name-pattern='^upgrades: (the addon writes|a client frame|a wrong accept|a backend that closes|1,000 handshakes|a flood)' dist/test/e2e/native-upgrade.test.js
# L4 listeners served by the addon (l4.cc, client-hello.h): tcp and TLS passthrough through a running worker, 300
# fuzzed hellos included (~46 s; the JS path's cases and the 10,000-connection test are left to the plain run)
run --test-name-pattern='on the addon' --test-name-pattern='reload moves' dist/test/e2e/l4-native.test.js
# L4 listeners with proxy_protocol on the addon (l4.cc, proxy-header.h): PROXY headers whole and in pieces, every
# refusal, passthrough behind a header, through a running worker (the JS path's cases are left to the plain run)
run --test-name-pattern='on the addon' dist/test/e2e/l4-native-proxy.test.js
# connections_per_ip on L4 listeners on the addon (l4.cc counting in client-table.cc's table, shared with JavaScript):
# tcp, HTTP beside L4, passthrough, behind a PROXY header, ::1, a reload (the JS path's cases are left to the plain run)
run --test-name-pattern='on the addon' dist/test/e2e/l4-native-conn-limit.test.js
# hash upstreams on the addon (l4.cc PickHash, hash-pick.h, l4Pins, the held keys of its batches): affinity by client
# address over two workers, a drained target's keys moving and back, a pinned key, PROXY v1/v2 sources, passthrough
# by name, 2,000 client addresses at once with ~700 keys pinned (~27 s; the JS path's cases are left to the plain run)
run --test-name-pattern='on the addon' dist/test/e2e/l4-hash.test.js
# an L4 listener whose upstream follows a DNS name (l4.cc compiles replaced at run time, their connections on the old
# one to their end): targets added and removed, a drain carried over, no target yet (~10 s; the JS path's cases are
# left to the plain run)
run --test-name-pattern='on the addon' dist/test/e2e/l4-discovery.test.js
# the relayed answer (response-head.cc, io.cc ioAnswer): answers relayed through a running worker (plain and TLS
# clients, backpressure, lying and vanishing peers) (~30 s)
run dist/test/e2e/native-answer.test.js
# native TLS over WebSockets: the TLS relay thread's echo, pipelining, half-close, close_notify, backpressure, drain (~25 s)
run dist/test/e2e/native-wss.test.js
# a WebSocket peer that drops without a Close frame (relay.cc and tls-relay.cc EndsAtOnce): both relays end at once;
# a closing handshake and bytes that are not frames keep half-close, for tunnel.half_closed_timeout of silence (~20 s;
# the JS relay's cases in the plain run); an L4 connection on the addon half-closed and silent that long (~5 s)
run --test-name-pattern="^(splice relay|addon's TLS relay): " dist/test/e2e/ws-dropped.test.js
run --test-name-pattern='half_closed_timeout is closed, not before: the addon' dist/test/e2e/l4.test.js
# native TLS (tls.cc): real clients, tickets across workers, malformed hellos, stalls, FINs, reload, cipher order,
# the OpenSSL symbols (~25 s). Left out: the same checks on Node's TLS (PORTICO_NATIVE_TLS=0 or PORTICO_NATIVE_IO=0):
# no native handshake there (what they assert), and the upstream legs they use are native-answer's.
run --test-name-pattern='^native TLS: ' --test-name-pattern='^the native addon resolves' dist/test/e2e/native-tls.test.js
# floods in a network namespace the test makes (root or sudo -n): io.cc SynQueued under a spoofed SYN flood, native
# accept and the L4 thread under silent connections, a SIGTERM under both (~25 s)
run dist/test/e2e/netns-floods.test.js
# a link-local client's address with its zone (ip-text.h AddressText) through native accept and the L4 thread, in a
# namespace the test makes (~10 s; the PORTICO_NATIVE_IO=0 oracle's cases are left to the plain run)
run --test-name-pattern='^native accept' dist/test/e2e/link-local-client.test.js
# TLS-ALPN-01: the addon's ClientHello reading (odd hellos while a challenge is pending) and a Pebble issue (~22 s)
run --test-name-pattern='native TLS' dist/test/e2e/acme-alpn-fuzz.test.js dist/test/e2e/acme-alpn.test.js
# peek mode (handoff: adopt): the addon's half, then the hand-over to uWebSockets.js end to end (~22 s). Left out:
# `portico check` on handoff values and the TLS listener's fallback to the relay: the checker is JavaScript, and the
# WSS hop on the TLS relay thread is terminate's first WSS case below.
run --test-name-pattern='^(successive peeks|commit drops|a write commits)' --test-name-pattern='^handoff: adopt( on a plain|: a peeked|: keepalive)' dist/test/component/native-peek.test.js dist/test/e2e/terminate-adopt.test.js
# a TLS listener that peeks a preface (passthrough names, a PROXY header) and hands the rewound connection to the
# addon's TLS (io.cc ioRewind): whole and dribbled hellos, hostile ones (~15 s). Left out: the same on Node's TLS
run --test-name-pattern='^the addon: ' dist/test/e2e/tls-peeked.test.js
# terminated WSS: the hop into uWebSockets.js on the TLS relay thread (a raw relay over a unix socket, held up by
# the session when the backend is slow) and a SIGTERM drain (1001) over the TLS hop (~21 s). Left out: the Node-TLS
# fallback (PORTICO_NATIVE_TLS=0): Node terminates TLS and the hop is JavaScript's.
run --test-name-pattern='^terminated WSS: the hop' --test-name-pattern='^terminated WebSocket drain \(wss' dist/test/e2e/terminate.test.js
# unix:/path targets on the native I/O (io.cc ioConnectUnix): FastCGI and HTTP relayed answers and a WebSocket tunnel
# through the splice relay, all to peers on Unix sockets (~20 s). Left out: a missing path, a refusing socket and a
# full backlog as a worker answers them (502s, passive health: JavaScript); io.cc's Unix connect failing each of
# these ways (and more) is native-io's 'connectNative to a Unix socket' above.
run --test-name-pattern='^unix: (FastCGI|an HTTP backend|a WebSocket)' dist/test/e2e/native-unix.test.js
# the native FastCGI exchange (exchange.cc, script-cache.cc, io.cc StartExchange; PORTICO_NATIVE_EXCHANGE=1): requests a
# ready client's read started by the addon on lent FPM connections of a real php-fpm, pipelined and split heads, a
# deleted script, FPM closing its connections, a client leaving, a reload, a target leaving rotation
run dist/test/e2e/native-exchange.test.js
run dist/test/e2e/native-exchange-liar.test.js
# a send to a lent FPM connection the application had reset (io.cc StartExchange, exchange.cc Unstarted): the read
# goes to JavaScript, counted as declined (~3 s)
run dist/test/e2e/native-exchange-declined.test.js
# 400 keep-alive clients on 8 FPM children (max_connections 8, a small queue), some leaving mid-answer: 200 or 503 each,
# fds back after. Left out: the same flood with the flag off (JavaScript's exchange, the oracle of the plain run)
run --test-name-pattern='^native exchange on: ' dist/test/e2e/native-exchange-flood.test.js
# idle connections: the handshakes' memory given back (malloc_trim under the relay thread's sessions), relays after (~19 s)
run dist/test/e2e/idle-memory.test.js
# native accept (io.cc's listeners); its 10,000-tunnel capacity test is left to the plain run (minutes under ASan)
# (named one by one: Node 20's --test-name-pattern ran it despite a negative lookahead; ASan's quarantine also
# keeps freed memory, so its RSS check cannot hold there) (~15 s)
run --test-name-pattern='connections at once' --test-name-pattern='past the fd limit' --test-name-pattern='^SIGTERM: the listener' dist/test/e2e/native-accept.test.js
# the C++ heads fuzzed against the JS ones: response heads (response-head.cc), the 101 check (RewriteUpgrade) and its accept value (ws-accept.h),
# FastCGI's answer records (fcgi-answer.cc), request heads (request-head.cc; not on the request path yet), the route
# table (route-table.cc, io.cc routeTableCompile / routeTableMatch; not on the request path yet), FastCGI's request
# records of a bodyless GET/HEAD (fcgi-request.cc, io.cc fcgiRequestRecords; not on the request path yet), the
# ClientHello reader (client-hello.h), the PROXY header reader with its CIDR matcher (proxy-header.h) and the client key
# of connections_per_ip (client-key.h), the hash policy of L4 compiles (hash-pick.h: key, hash, pick) against the JS
# ones; heads of real clients included (~40 s together)
run dist/test/fuzz/native-response-head.fuzz.test.js dist/test/fuzz/native-upgrade-head.fuzz.test.js dist/test/fuzz/native-ws-accept.fuzz.test.js dist/test/fuzz/native-fcgi-answer.fuzz.test.js
run dist/test/fuzz/native-request-head.fuzz.test.js dist/test/fuzz/native-route-table.fuzz.test.js
run dist/test/fuzz/native-fcgi-request.fuzz.test.js dist/test/fuzz/native-client-hello.fuzz.test.js dist/test/fuzz/native-proxy-protocol.fuzz.test.js dist/test/fuzz/native-client-key.fuzz.test.js dist/test/fuzz/native-hash-pick.fuzz.test.js dist/test/fuzz/native-passthrough-names.fuzz.test.js

# --- run them, PORTICO_ASAN_JOBS at once ---
max="${PORTICO_ASAN_JOBS:-2}"
logs=build-asan/logs
rm -rf "$logs"
mkdir -p "$logs"
declare -A started
printed=()
failed=()
report() {
  local i rc
  for i in "${!RUNS[@]}"; do
    [ -f "$logs/$i.rc" ] || continue
    [ -n "${printed[$i]:-}" ] && continue
    printed[$i]=1
    rc="$(cat "$logs/$i.rc")"
    cat "$logs/$i.log"
    printf '# asan run %d: exit %s, %ds: node --test %s\n' "$i" "$rc" "$(( $(date +%s) - started[$i] ))" "${RUNS[$i]}"
    [ "$rc" = 0 ] || failed+=("$i")
  done
}
for i in "${!RUNS[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$max" ]; do wait -n || true; report; done
  started[$i]="$(date +%s)"
  # ASan is preloaded into node (and what it starts) only, never into this shell's own tools
  ( rc=0; eval "LD_PRELOAD=$(printf '%q' "$asan_preload") ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 node --test ${RUNS[$i]}" > "$logs/$i.log" 2>&1 || rc=$?; echo "$rc" > "$logs/$i.rc" ) &
done
while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || true; report; done
report
if [ "${#failed[@]}" -gt 0 ]; then
  echo "asan: ${#failed[@]} of ${#RUNS[@]} runs failed:" >&2
  for i in "${failed[@]}"; do echo "  node --test ${RUNS[$i]}" >&2; done
  exit 1
fi
echo "asan: all ${#RUNS[@]} runs passed"
