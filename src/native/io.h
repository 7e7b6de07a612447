// Native socket I/O on the JS thread's loop (io.cc): registers its functions on the addon's exports.
#pragma once

#include <napi.h>

namespace portico::io {
void Register(Napi::Env env, Napi::Object exports);
}

namespace portico::tls {
class Session;
}

namespace portico::io {
// Takes a handshaken TLS connection out of the native I/O (for the TLS relay thread): its fd and session are
// the caller's from here; the id is free. False (nothing changes) when the id is not such a connection or it
// still has bytes queued or a close pending.
bool DetachTls(Napi::Env env, int32_t id, int* fd, tls::Session** session);
}
