// N-API bindings of Portico's optional native addon: SO_REUSEPORT listening sockets, fd helpers (dup, close,
// recv(MSG_PEEK), RLIMIT_NOFILE) and the splice relay with its pipe pool (relay.cc). Loaded by src/native/addon.ts, which owns the JS types.
// Single-environment by design: the relay's close reports go to the main thread of the process that loaded it
// first; a second environment (worker_threads) gets an error instead of sharing the relay thread.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include <napi.h>

#include "client-table.h"
#include "end-bridge.h"
#include "io.h"
#include "l4.h"
#include "napi-args.h"
#include "relay.h"
#include "tls-relay.h"
#include "tls.h"

namespace {

using portico::Reason;
using portico::RelayEnd;
using portico::RelayEngine;

// The splice relay's ends on their way to JS (end-bridge.h: held until the loop's next turn).
portico::EndBridge* bridge = nullptr;

void OnRelayEnd(const RelayEnd& end);
int EndsBeforeWait();
RelayEngine engine(OnRelayEnd, EndsBeforeWait);

// An Error like Node's system errors: message "syscall CODE: text", with .code, .errno and .syscall.
Napi::Error SystemError(Napi::Env env, const char* syscall, int err) {
  const char* code = strerrorname_np(err);
  std::string message = std::string(syscall) + " " + (code != nullptr ? code : "E?") + ": " + strerror(err);
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code != nullptr ? code : "EUNKNOWN"));
  e.Set("errno", Napi::Number::New(env, -err));
  e.Set("syscall", Napi::String::New(env, syscall));
  return e;
}

int FdArg(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || !info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), "fd must be a number");
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (v < 0 || v > 0x7fffffff || v != static_cast<int>(v)) throw Napi::TypeError::New(info.Env(), "fd must be a non-negative integer");
  return static_cast<int>(v);
}

// reusePortListen(host: IP literal, port, backlog) -> fd: a non-blocking, close-on-exec listening TCP socket
// with SO_REUSEADDR and SO_REUSEPORT, for `server.listen({ fd })`. Node then owns (and closes) the fd.
Napi::Value ReusePortListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsNumber() || !info[2].IsNumber()) {
    throw Napi::TypeError::New(env, "reusePortListen(host: string, port: number, backlog: number)");
  }
  std::string host = info[0].As<Napi::String>().Utf8Value();
  double port = info[1].As<Napi::Number>().DoubleValue();
  double backlog = info[2].As<Napi::Number>().DoubleValue();
  if (port < 0 || port > 65535 || port != static_cast<int>(port)) throw Napi::RangeError::New(env, "port must be 0..65535");
  if (backlog < 1 || backlog > 65535) throw Napi::RangeError::New(env, "backlog must be 1..65535");

  sockaddr_storage addr{};
  socklen_t len = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&addr);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    len = sizeof *v4;
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    len = sizeof *v6;
  } else {
    throw Napi::TypeError::New(env, "reusePortListen: host must be an IPv4 or IPv6 literal, got \"" + host + "\"");
  }

  int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw SystemError(env, "socket", errno);
  const char* failed = nullptr;
  int one = 1;
  // Like libuv: SO_REUSEADDR lets a restarted worker bind while old connections sit in TIME_WAIT.
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) failed = "setsockopt(SO_REUSEADDR)";
  else if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) failed = "setsockopt(SO_REUSEPORT)";
  else if (bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) failed = "bind";
  else if (listen(fd, static_cast<int>(backlog)) != 0) failed = "listen";
  if (failed != nullptr) {
    int err = errno;
    close(fd);
    throw SystemError(env, failed, err);
  }
  return Napi::Number::New(env, fd);
}

// dup(fd) -> a close-on-exec copy; the caller owns it.
Napi::Value Dup(const Napi::CallbackInfo& info) {
  int fd = FdArg(info, 0);
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) throw SystemError(info.Env(), "dup", errno);
  return Napi::Number::New(info.Env(), copy);
}

// close(fd): for fds from dup() that were not handed on.
Napi::Value Close(const Napi::CallbackInfo& info) {
  int fd = FdArg(info, 0);
  // Never retried: on Linux the fd is released even when close reports EINTR.
  if (close(fd) != 0 && errno != EINTR) throw SystemError(info.Env(), "close", errno);
  return info.Env().Undefined();
}

// recvPeek(fd, n) -> Buffer (the bytes waiting, not consumed; empty = the peer sent FIN) | null (nothing yet).
Napi::Value RecvPeek(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  if (info.Length() < 2 || !info[1].IsNumber()) throw Napi::TypeError::New(env, "recvPeek(fd, n)");
  double want = info[1].As<Napi::Number>().DoubleValue();
  if (want < 1 || want > 65536) throw Napi::RangeError::New(env, "recvPeek: n must be 1..65536");
  Napi::Buffer<uint8_t> buf = Napi::Buffer<uint8_t>::New(env, static_cast<size_t>(want));
  ssize_t n;
  do n = recv(fd, buf.Data(), buf.Length(), MSG_PEEK | MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return env.Null();
    throw SystemError(env, "recv", errno);
  }
  return Napi::Buffer<uint8_t>::Copy(env, buf.Data(), static_cast<size_t>(n));
}

// Relay thread: the end waits for the JS thread's next turn (no syscall here).
void OnRelayEnd(const RelayEnd& end) {
  if (portico::l4::ClaimRelayEnd(end)) return;  // an L4 listener's connection: reported in l4.cc's batches
  if (bridge != nullptr) bridge->Hold(end);
}

// Relay thread, before it sleeps.
int EndsBeforeWait() {
  return bridge != nullptr ? bridge->BeforeWait() : -1;
}

portico::EndBridge& OwnBridge(Napi::Env env) {
  if (bridge == nullptr || !bridge->Owns(env)) {
    throw Napi::Error::New(env, "the splice relay belongs to another JS environment (load the addon from the main thread only)");
  }
  return *bridge;
}

uint64_t IdArg(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "relay id must be a number");
  double v = info[0].As<Napi::Number>().DoubleValue();
  if (v < 1 || v != static_cast<double>(static_cast<uint64_t>(v))) throw Napi::TypeError::New(info.Env(), "bad relay id");
  return static_cast<uint64_t>(v);
}

// The WebSocket leftovers argument of spliceStart/spliceTakeIo: { up, down } Buffers (either may be null).
portico::WebSocketStart WebSocketArg(const Napi::Value& v) {
  portico::WebSocketStart ws;
  Napi::Object o = v.As<Napi::Object>();
  for (auto [key, out] : {std::pair<const char*, std::string*>{"up", &ws.up}, {"down", &ws.down}}) {
    Napi::Value b = o.Get(key);
    if (b.IsBuffer()) out->assign(b.As<Napi::Buffer<char>>().Data(), b.As<Napi::Buffer<char>>().Length());
  }
  return ws;
}

// The halfClose argument of spliceStart/spliceTakeIo at `i`: only an explicit false turns half-close off.
bool HalfCloseArg(const Napi::CallbackInfo& info, size_t i) {
  return !(info.Length() > i && info[i].IsBoolean() && !info[i].As<Napi::Boolean>().Value());
}

// spliceStart(clientFd, upstreamFd, idleMs, cb(reason, bytesUp, bytesDown, errno), websocket?, halfClose?, halfClosedMs?) -> id.
// Takes both fds (closed by the relay, also when this throws). cb runs once, on this thread, after both fds are
// closed. websocket: { up, down } (Buffers: the bytes each way relayed before) for a WebSocket tunnel; omitted or
// undefined = raw. halfClose: false = StartOptions::half_close off (raw relays); omitted = on. halfClosedMs:
// StartOptions::half_closed_ms (omitted: none).
Napi::Value SpliceStart(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int a = FdArg(info, 0);
  int b = FdArg(info, 1);
  if (info.Length() < 4 || !info[2].IsNumber() || !info[3].IsFunction()) {
    close(a);
    close(b);
    throw Napi::TypeError::New(env, "spliceStart(clientFd, upstreamFd, idleMs, callback)");
  }
  double idle = info[2].As<Napi::Number>().DoubleValue();
  uint32_t idle_ms = idle > 0 ? (idle > 4e9 ? 4000000000u : static_cast<uint32_t>(idle)) : 0;
  portico::EndBridge* br = bridge;
  if (br == nullptr || !br->Owns(env)) {
    close(a);
    close(b);
    OwnBridge(env);  // throws
  }
  portico::WebSocketStart ws;
  const bool framed = info.Length() > 4 && info[4].IsObject();
  if (framed) ws = WebSocketArg(info[4]);
  std::string error;
  portico::StartOptions options;
  options.half_close = HalfCloseArg(info, 5);
  try {
    options.half_closed_ms = portico::OptionalMs(info.Length() > 6 ? info[6] : env.Undefined(), "halfClosedMs");
  } catch (...) {
    close(a);
    close(b);
    throw;
  }
  uint64_t id = engine.Start(a, b, idle_ms, framed ? &ws : nullptr, &error, options);
  if (id == 0) throw Napi::Error::New(env, "spliceStart: " + error);
  // The end cannot be delivered before this returns: delivery runs on this thread, after this call.
  br->Expect(env, id, info[3].As<Napi::Function>());
  return Napi::Number::New(env, static_cast<double>(id));
}

// spliceTakeIo(clientIoId, upstreamIoId, idleMs, keepAliveSeconds, cb, websocket?, halfClose?, halfClosedMs?) -> id | 0. Two connections of
// the native I/O (io.cc ids) go to the splice relay as they are: their fds leave the I/O's table unclosed and
// the relay owns them (no dup, no close, no fcntl, one call for both), with TCP keep-alive on both armed by the
// relay thread once the tunnel lived a second when keepAliveSeconds > 0. 0: nothing was taken (not plain connected sockets, bytes still queued to one of them,
// or the relay could not start): both are as they were. cb and websocket as spliceStart's.
Napi::Value SpliceTakeIo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  portico::EndBridge& br = OwnBridge(env);
  if (info.Length() < 5 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsNumber() || !info[3].IsNumber() || !info[4].IsFunction()) {
    throw Napi::TypeError::New(env, "spliceTakeIo(clientIoId, upstreamIoId, idleMs, keepAliveSeconds, callback, websocket?)");
  }
  const int32_t ids[2] = {info[0].As<Napi::Number>().Int32Value(), info[1].As<Napi::Number>().Int32Value()};
  double idle = info[2].As<Napi::Number>().DoubleValue();
  uint32_t idle_ms = idle > 0 ? (idle > 4e9 ? 4000000000u : static_cast<uint32_t>(idle)) : 0;
  const int keep_alive = info[3].As<Napi::Number>().Int32Value();
  const bool framed = info.Length() > 5 && info[5].IsObject();
  portico::WebSocketStart ws;
  if (framed) ws = WebSocketArg(info[5]);
  const uint32_t half_closed_ms = portico::OptionalMs(info.Length() > 7 ? info[7] : env.Undefined(), "halfClosedMs");
  if (ids[0] == ids[1]) return Napi::Number::New(env, 0);
  int fds[2] = {-1, -1};
  bool sole[2] = {false, false};
  if (!portico::io::SuspendPlain(env, ids[0], &fds[0], &sole[0])) return Napi::Number::New(env, 0);
  if (!portico::io::SuspendPlain(env, ids[1], &fds[1], &sole[1])) {
    portico::io::ResumePlain(env, ids[0]);
    return Napi::Number::New(env, 0);
  }
  std::string error;
  portico::StartOptions options;
  options.nonblocking = true;  // every fd of the native I/O is (SOCK_NONBLOCK, or made so at adoption)
  options.keep_on_failure = true;
  // accepted or connected by the native I/O and never dup'ed: the relay's close() needs no EPOLL_CTL_DEL
  options.sole_owner = sole[0] && sole[1];
  // both legs, armed by the relay thread once the tunnel lived a second: no setsockopt in the hand-over
  options.upstream_keepalive_s = keep_alive > 0 ? keep_alive : 0;
  options.client_keepalive = true;
  options.half_close = HalfCloseArg(info, 6);
  options.half_closed_ms = half_closed_ms;
  uint64_t id = engine.Start(fds[0], fds[1], idle_ms, framed ? &ws : nullptr, &error, options);
  if (id == 0) {
    for (int32_t io_id : ids) portico::io::ResumePlain(env, io_id);
    return Napi::Number::New(env, 0);
  }
  for (int32_t io_id : ids) portico::io::ReleasePlain(env, io_id);
  br.Expect(env, id, info[4].As<Napi::Function>());
  return Napi::Number::New(env, static_cast<double>(id));
}

// spliceClose(id, reason) -> boolean: false when the relay has already ended (its callback is on its way).
Napi::Value SpliceClose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  OwnBridge(env);
  uint64_t id = IdArg(info);
  Reason reason;
  if (info.Length() < 2 || !info[1].IsString() || !portico::ParseReason(info[1].As<Napi::String>().Utf8Value(), &reason)) {
    throw Napi::TypeError::New(env, "spliceClose(id, reason): reason must be a ClosedBy name");
  }
  return Napi::Boolean::New(env, engine.RequestClose(id, reason));
}

// spliceGoingAway(id) -> boolean: a WebSocket relay closes with Close 1001 at frame boundaries (a raw one at
// once); false when the relay has already ended.
Napi::Value SpliceGoingAway(const Napi::CallbackInfo& info) {
  OwnBridge(info.Env());
  return Napi::Boolean::New(info.Env(), engine.RequestGoingAway(IdArg(info)));
}

// splicePause(id, direction, paused) -> boolean: a raw relay stops (or restarts) reading one direction (0 client
// -> upstream, 1 upstream -> client); false when the relay has already ended.
Napi::Value SplicePause(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  OwnBridge(env);
  if (info.Length() < 3 || !info[1].IsNumber() || !info[2].IsBoolean()) throw Napi::TypeError::New(env, "splicePause(id, direction, paused)");
  int direction = info[1].As<Napi::Number>().Int32Value();
  if (direction != 0 && direction != 1) throw Napi::RangeError::New(env, "splicePause: direction must be 0 or 1");
  return Napi::Boolean::New(env, engine.RequestPause(IdArg(info), direction, info[2].As<Napi::Boolean>().Value()));
}

// spliceStats(id) -> { bytesUp, bytesDown, upBlocked, downBlocked } | null once ended.
Napi::Value SpliceStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  portico::RelayStats s;
  if (!engine.Stats(IdArg(info), &s)) return env.Null();
  Napi::Object o = Napi::Object::New(env);
  o.Set("bytesUp", Napi::Number::New(env, static_cast<double>(s.bytes_up)));
  o.Set("bytesDown", Napi::Number::New(env, static_cast<double>(s.bytes_down)));
  o.Set("upBlocked", Napi::Boolean::New(env, s.up_blocked));
  o.Set("downBlocked", Napi::Boolean::New(env, s.down_blocked));
  return o;
}

// status() -> { active, pending }: relays moving bytes, and ended relays whose callback has not run yet.
Napi::Value Status(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("active", Napi::Number::New(env, static_cast<double>(engine.Active())));
  o.Set("callbacks", Napi::Number::New(env, bridge != nullptr ? static_cast<double>(bridge->Expected()) : 0));
  // relay ends delivered, and how many times the relay thread had to wake the JS thread for them
  o.Set("endsDelivered", Napi::Number::New(env, bridge != nullptr ? static_cast<double>(bridge->Delivered()) : 0));
  o.Set("endWakes", Napi::Number::New(env, bridge != nullptr ? static_cast<double>(bridge->Wakes()) : 0));
  return o;
}

// setPipeCap(n): the most pipes the splice relay's pool may hold at once (limits.max_pipes).
Napi::Value SetPipeCap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "setPipeCap(n: number)");
  double v = info[0].As<Napi::Number>().DoubleValue();
  if (v < 0 || v > 1e7 || v != static_cast<double>(static_cast<size_t>(v))) throw Napi::RangeError::New(env, "setPipeCap: n must be 0..10000000");
  engine.SetPipeCap(static_cast<size_t>(v));
  return env.Undefined();
}

// pipeStats() -> { open, inUse, cap, copies, pipeErrors }: the relay thread's pipe pool.
Napi::Value PipeStatsJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  portico::PipeStats p = engine.Pipes();
  Napi::Object o = Napi::Object::New(env);
  o.Set("open", Napi::Number::New(env, static_cast<double>(p.open)));
  o.Set("inUse", Napi::Number::New(env, static_cast<double>(p.in_use)));
  o.Set("cap", Napi::Number::New(env, static_cast<double>(p.cap)));
  o.Set("copies", Napi::Number::New(env, static_cast<double>(p.copies)));
  o.Set("pipeErrors", Napi::Number::New(env, static_cast<double>(p.pipe_errors)));
  return o;
}

// raiseFdLimit() -> { soft, hard, before }: raises the soft RLIMIT_NOFILE to the hard one (Node has no API for
// it). RLIM_INFINITY reads as -1. Throws a system error when getrlimit/setrlimit fails.
Napi::Value RaiseFdLimit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) throw SystemError(env, "getrlimit", errno);
  const rlim_t before = lim.rlim_cur;
  if (lim.rlim_cur != lim.rlim_max) {
    rlimit want = lim;
    want.rlim_cur = lim.rlim_max;
    // A hard limit of "unlimited" is capped by the kernel's nr_open: setrlimit refuses more (EPERM).
    if (setrlimit(RLIMIT_NOFILE, &want) != 0) throw SystemError(env, "setrlimit", errno);
    lim = want;
  }
  auto num = [&](rlim_t v) { return Napi::Number::New(env, v == RLIM_INFINITY ? -1.0 : static_cast<double>(v)); };
  Napi::Object o = Napi::Object::New(env);
  o.Set("soft", num(lim.rlim_cur));
  o.Set("hard", num(lim.rlim_max));
  o.Set("before", num(before));
  return o;
}

// countOpenFds(below) -> how many of the descriptors 0..below-1 are open: one poll() with no events, where a
// closed slot answers POLLNVAL (~0.5 ms for 20,000 on this machine; /proc/self/fd takes 60 ms). JS thread only.
Napi::Value CountOpenFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "countOpenFds(below: number)");
  double below = info[0].As<Napi::Number>().DoubleValue();
  if (below < 0 || below > 16777216 || below != static_cast<double>(static_cast<size_t>(below))) throw Napi::RangeError::New(env, "countOpenFds: below must be 0..16777216");
  static std::vector<pollfd> slots;
  const size_t n = static_cast<size_t>(below);
  if (slots.size() != n) {
    slots.resize(n);
    for (size_t i = 0; i < n; i++) slots[i] = pollfd{static_cast<int>(i), 0, 0};
  }
  int rc;
  do rc = poll(slots.data(), n, 0);
  while (rc < 0 && errno == EINTR);
  if (rc < 0) throw SystemError(env, "poll", errno);
  size_t open = 0;
  for (const pollfd& p : slots) if ((p.revents & POLLNVAL) == 0) open++;
  return Napi::Number::New(env, static_cast<double>(open));
}

void Teardown(void* /*arg*/) {
  // Stop the relay thread before the tsfn goes: it must never call into a released function.
  engine.Stop();
  portico::EndBridge* br = bridge;
  bridge = nullptr;
  delete br;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("reusePortListen", Napi::Function::New(env, ReusePortListen, "reusePortListen"));
  exports.Set("dup", Napi::Function::New(env, Dup, "dup"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("recvPeek", Napi::Function::New(env, RecvPeek, "recvPeek"));
  exports.Set("spliceStart", Napi::Function::New(env, SpliceStart, "spliceStart"));
  exports.Set("spliceTakeIo", Napi::Function::New(env, SpliceTakeIo, "spliceTakeIo"));
  exports.Set("spliceClose", Napi::Function::New(env, SpliceClose, "spliceClose"));
  exports.Set("spliceGoingAway", Napi::Function::New(env, SpliceGoingAway, "spliceGoingAway"));
  exports.Set("spliceStats", Napi::Function::New(env, SpliceStats, "spliceStats"));
  exports.Set("splicePause", Napi::Function::New(env, SplicePause, "splicePause"));
  exports.Set("status", Napi::Function::New(env, Status, "status"));
  exports.Set("setPipeCap", Napi::Function::New(env, SetPipeCap, "setPipeCap"));
  exports.Set("pipeStats", Napi::Function::New(env, PipeStatsJs, "pipeStats"));
  exports.Set("raiseFdLimit", Napi::Function::New(env, RaiseFdLimit, "raiseFdLimit"));
  exports.Set("countOpenFds", Napi::Function::New(env, CountOpenFds, "countOpenFds"));
  portico::io::Register(env, exports);
  portico::tls::Register(env, exports);
  portico::tls_relay::Register(env, exports);
  portico::l4::Register(env, exports, &engine);
  portico::clients::Register(env, exports);
  if (bridge == nullptr) {
    bridge = new portico::EndBridge(env, "portico-splice", &bridge);
    napi_add_env_cleanup_hook(env, Teardown, nullptr);
  }
  return exports;
}

}  // namespace

NODE_API_MODULE(portico_native, Init)
