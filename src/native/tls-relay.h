// The TLS tunnel relay: after a backend's 101, a client leg whose TLS the addon terminates (a tls::Session on
// its fd) and a plain backend leg are relayed on this relay's own thread (decrypt -> send, recv -> encrypt),
// with half-close (close_notify + FIN both ways) and backpressure; the bytes never enter JavaScript. It takes
// the session and both fds from Start() and frees or closes each exactly once. A raw relay (terminate's hop into
// uWebSockets.js over a unix socket) follows no frames and can stop reading its client (tlsRelayPause) for a
// destination that cannot push back. N-API bindings: tlsRelay*.
#pragma once

#include <napi.h>

namespace portico::tls_relay {

void Register(Napi::Env env, Napi::Object exports);

}  // namespace portico::tls_relay
