// The native FastCGI exchange's start (exchange.cc): steps 3 and 4 of native-notes/request.md, first slice. When a
// client connection JS marked ready (between exchanges, nothing buffered) reads exactly one whole head of the
// subset, the addon scans it (rq::Scan, forwarding fields read), matches the config's route table, finds the
// script's pairs in the script cache, takes an idle FPM connection the pool lent it, and writes the FastCGI records
// (fq::Records) on it; io.cc then arms the answer (fcgi-answer.h) with the route's head memo and tells JS with one
// STARTED event in place of the DATA event. JS adopts the exchange (handlers/fastcgi.ts) and keeps its bookkeeping:
// access log, metrics, deadlines, passive health, retries. Anything else is "not mine": the read comes as DATA.
// Everything here is per worker (one JS thread): a config (the table, the limits, the route plans, the script cache
// and head memos) made current by JS, per client whether it is ready, per upstream connection whether it is lent.
#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace portico::nx {

// An exchange Try started: io.cc writes `records` on `upstream`, arms it when `armed`, and pushes STARTED.
struct Start {
  int32_t upstream = -1;
  int32_t route = -1;
  int32_t target = -1;
  int32_t config = 0;
  std::string records;
  bool armed = false;  // the route has a head memo this request's shape can use: cgi/head/status below
  const std::string* cgi = nullptr;
  const std::string* head = nullptr;
  int32_t status = 0;
};

// The FastCGI request id of every request (one request per connection at a time: fastcgi.ts REQUEST_ID).
constexpr uint16_t kRequestId = 1;

// Whether client `id` is ready (a cheap test before Try).
bool Ready(int32_t id);

// One read of client `id` (fd `fd`), p[0..len): the exchange to start, or false (the read is JS's, as DATA). Any read
// of a ready client ends its readiness. `usable(uid)`: whether upstream `uid` can be written and armed for the
// client now (io.cc's state); a lent connection that is not is dropped from the lent lists.
template <typename Usable>
bool Try(int32_t id, int fd, const uint8_t* p, size_t len, Usable usable, Start* out);

// The exchange Try started could not be sent (io.cc's write failed): the read goes to JS after all, a declined one.
void Unstarted();

// The connection `id` closed, or something came from it while it was lent (a stray byte, its FIN, an error: JS's
// idle listeners close it): neither ready nor lent from now on.
void Forget(int32_t id);

// Something came from connection `id` (a read, a FIN, an error): when it is lent, it is not any more (JS's idle
// listeners close it); one taken in this batch stays taken.
void Spoke(int32_t id);

// After a batch is dispatched: the connections taken in it are no longer reported as taken (exUnlend).
void BatchDone();

// The ex* functions on the addon's exports.
void Register(Napi::Env env, Napi::Object exports);

// Try's body with the usable test as a function pointer (exchange.cc).
bool TryWith(int32_t id, int fd, const uint8_t* p, size_t len, bool (*usable)(void*, int32_t), void* arg, Start* out);

template <typename Usable>
bool Try(int32_t id, int fd, const uint8_t* p, size_t len, Usable usable, Start* out) {
  return TryWith(id, fd, p, len, [](void* a, int32_t uid) { return (*static_cast<Usable*>(a))(uid); }, &usable, out);
}

}  // namespace portico::nx
