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

// A plain connection leaving the native I/O for the splice relay, in two steps so that nothing is lost when the
// relay cannot take it. SuspendPlain takes its fd out of the epoll set and gives it (false, nothing changed: not
// a connected plain TCP connection, or it has bytes queued, a FIN pending or a peeked head); then either
// ReleasePlain (the fd is the caller's, not closed; the id is free) or ResumePlain (back in the set, as it was).
// `sole`: no dup of the fd was ever given out (an fd accepted or connected here), so close() alone takes it out
// of any epoll set.
bool SuspendPlain(Napi::Env env, int32_t id, int* fd, bool* sole);
void ReleasePlain(Napi::Env env, int32_t id);
void ResumePlain(Napi::Env env, int32_t id);
}
