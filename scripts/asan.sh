#!/usr/bin/env bash
# The native addon under AddressSanitizer: builds src/native/*.cc with -fsanitize=address into build-asan/ (g++
# directly, the same flags as binding.gyp), then runs the tests that drive the addon's TLS, relays and socket
# I/O (native accept included) with that build preloaded (node itself is not instrumented; leak checking is off, as Node's own
# allocations at exit are not ours). A sanitizer report aborts the process, which fails the test.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build-asan
napi="$(node -p "require('node-addon-api').include_dir")"
nodeinc="$(dirname "$(dirname "$(command -v node)")")/include/node"
g++ -shared -fPIC -fsanitize=address -fno-omit-frame-pointer -O1 -g -std=c++17 -fexceptions \
  -I"$nodeinc" -I"$napi" -DNAPI_VERSION=8 -DNAPI_CPP_EXCEPTIONS -DNODE_ADDON_API_DISABLE_DEPRECATED \
  src/native/addon.cc src/native/relay.cc src/native/io.cc src/native/tls.cc src/native/tls-relay.cc src/native/l4.cc src/native/end-bridge.cc src/native/response-head.cc src/native/request-head.cc src/native/route-table.cc src/native/fcgi-answer.cc src/native/fcgi-request.cc src/native/exchange.cc src/native/script-cache.cc \
  -o build-asan/portico_native.node
# curl hangs at start with libasan preloaded: the tests' curl runs without it (a shim first on PATH)
mkdir -p build-asan/bin
printf '#!/bin/sh\nunset LD_PRELOAD\nexec %s "$@"\n' "$(command -v curl)" > build-asan/bin/curl
chmod +x build-asan/bin/curl
export PATH="$PWD/build-asan/bin:$PATH"
export LD_PRELOAD="$(g++ -print-file-name=libasan.so)"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
export PORTICO_NATIVE_ADDON="$PWD/build-asan/portico_native.node"
node --test dist/test/component/relay.test.js dist/test/component/relay-wakeups.test.js dist/test/component/native-io.test.js dist/test/component/native-listen-end.test.js dist/test/component/splice.test.js dist/test/component/native-tls-io.test.js \
  dist/test/e2e/native-tls.test.js dist/test/e2e/native-wss.test.js
# idle connections: the handshakes' memory given back (malloc_trim under the relay thread's sessions), relays after
node --test dist/test/e2e/idle-memory.test.js
# peek mode (handoff: adopt): the addon's half, then the hand-over to uWebSockets.js end to end
node --test dist/test/component/native-peek.test.js dist/test/e2e/terminate-adopt.test.js
# terminated WSS: the hop into uWebSockets.js on the TLS relay thread (a raw relay over a unix socket, held up by
# the session when the backend is slow), the Node-TLS fallback, and a SIGTERM drain (1001) over the TLS hop
node --test --test-name-pattern='WSS|wss' dist/test/e2e/terminate.test.js
# TLS-ALPN-01: the addon's ClientHello reading (odd hellos while a challenge is pending) and a Pebble issue
node --test --test-name-pattern='native TLS' dist/test/e2e/acme-alpn-fuzz.test.js dist/test/e2e/acme-alpn.test.js
# native accept (io.cc's listeners); its 10,000-tunnel capacity test is left to the plain run (minutes under ASan)
# (named one by one: Node 20's --test-name-pattern ran it despite a negative lookahead; ASan's quarantine also
# keeps freed memory, so its RSS check cannot hold there)
node --test --test-name-pattern='connections at once' --test-name-pattern='past the fd limit' --test-name-pattern='^SIGTERM: the listener' dist/test/e2e/native-accept.test.js
# L4 listeners served by the addon (l4.cc, client-hello.h): the C++ ClientHello reader fuzzed against the JS one,
# then tcp and TLS passthrough through a running worker, 300 fuzzed hellos included (the 10,000-connection test is
# left to the plain run)
node --test dist/test/fuzz/native-client-hello.fuzz.test.js
node --test --test-name-pattern='on the addon' --test-name-pattern='reload moves' dist/test/e2e/l4-native.test.js
# floods in a network namespace the test makes (root or sudo -n): io.cc SynQueued under a spoofed SYN flood, native
# accept and the L4 thread under silent connections, a SIGTERM under both
node --test dist/test/e2e/netns-floods.test.js
# the relayed answer (response-head.cc, io.cc ioAnswer): the C++ head fuzzed against the JS parser and rewriter,
# then answers relayed through a running worker (plain and TLS clients, backpressure, lying and vanishing peers)
node --test dist/test/fuzz/native-response-head.fuzz.test.js dist/test/e2e/native-answer.test.js
# the WebSocket 101 written by the addon (response-head.cc RewriteUpgrade, io.cc ioAnswerUpgrade): the C++ check fuzzed
# against the JS one, then upgrades through a running worker (plain and TLS, first frames, lying and vanishing peers)
node --test dist/test/fuzz/native-upgrade-head.fuzz.test.js dist/test/e2e/native-upgrade.test.js
# FastCGI's relayed answer (fcgi-answer.cc, io.cc ioFcgiAnswer): the C++ record reader fuzzed against the JS codec,
# then answers relayed from a real php-fpm and a lying application (plain and TLS clients, backpressure, FPM killed)
node --test dist/test/fuzz/native-fcgi-answer.fuzz.test.js dist/test/e2e/native-fcgi-answer.test.js
# the request head read and rewritten in C++ (request-head.cc, io.cc requestHeadRewrite; not on the request path yet):
# fuzzed against the JS parser, path normalization and head builder, heads of real clients included
node --test dist/test/fuzz/native-request-head.fuzz.test.js
# the route table (route-table.cc, io.cc routeTableCompile / routeTableMatch; not on the request path yet): random configs
# and requests against the JS router, whole heads through request-head.cc, malformed table bytes
node --test dist/test/fuzz/native-route-table.fuzz.test.js
# FastCGI's request records of a bodyless GET/HEAD in C++ (fcgi-request.cc, io.cc fcgiRequestRecords; not on the request
# path yet): fuzzed against the JS params and encodeRequestStart, heads of real clients included
node --test dist/test/fuzz/native-fcgi-request.fuzz.test.js
# unix:/path targets on the native I/O (io.cc ioConnectUnix): FastCGI and HTTP relayed answers, connect failures
# (refused, missing, full backlog) and a WebSocket tunnel through the splice relay, all to peers on Unix sockets
node --test dist/test/e2e/native-unix.test.js
# the native FastCGI exchange (exchange.cc, script-cache.cc, io.cc StartExchange; PORTICO_NATIVE_EXCHANGE=1): requests a
# ready client's read started by the addon on lent FPM connections of a real php-fpm, pipelined and split heads, a
# deleted script, FPM closing its connections, a client leaving, a reload, a target leaving rotation
node --test dist/test/e2e/native-exchange.test.js
