// Non-blocking TCP socket I/O for the plain-TCP HTTP data path, driven on the JS thread's own libuv loop: one
// epoll set registered as a single uv_poll handle; each wake-up reads every ready socket into one shared buffer
// and hands the whole batch to JS in one call (no stream objects, no per-read allocation in native code).
// Writes go straight to send(2); only what the kernel does not take is queued here (JS bounds it).
// Listening sockets handed over by JS are served here too (native accept): accept4 in batches on the same wake-up,
// each accepted socket a connection of this table from its first byte, never a libuv handle.
// Owns its fds from listen/accept/adopt/connect until close or release; never touches fds it was not given.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstddef>
#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <napi.h>

#include "client-hello.h"
#include "exchange.h"
#include "fcgi-answer.h"
#include "fcgi-request.h"
#include "io.h"
#include "ip-text.h"
#include "passthrough-names.h"
#include "relay.h"
#include "request-head.h"
#include "response-head.h"
#include "route-handle.h"
#include "route-table.h"
#include "tls.h"
#include "ws-accept.h"

namespace portico::io {
namespace {

// Event kinds written into the shared event array: [id, kind, a, b] per event.
constexpr int32_t kData = 1;     // a = offset in the data buffer, b = length
constexpr int32_t kEof = 2;      // the peer sent FIN
constexpr int32_t kError = 3;    // a = errno
constexpr int32_t kDrain = 4;    // the native write queue emptied
constexpr int32_t kConnect = 5;  // a = 0 or errno
constexpr int32_t kAccept = 6;   // id = the new connection; a = offset of its address record, b = its length
constexpr int32_t kAcceptError = 7;  // id = the listener; a = errno (accepting is paused until JS resumes it)
constexpr int32_t kSecure = 8;   // the TLS handshake completed (reads now deliver plaintext)
constexpr int32_t kListenEnd = 9;  // id = a listener ioListenEnd left open: its queue is accepted, its fd closed
constexpr int32_t kAnswer = 10;    // an armed upstream relayed part of its answer (ioAnswer): a = offset of the record, b = its length
// The addon started a FastCGI exchange with this client's read (exchange.h): a = offset of the record (kStartedRecord
// bytes) followed by the head's bytes, b = their length together
constexpr int32_t kStarted = 11;
// A kStarted record: int32 upstream id, route index, target index, flags (1 = the answer is armed), the armed memo's
// CGI head length, its status, the records' length written, the exchange config's id.
constexpr size_t kStartedRecord = 32;
// As kAccept, for a connection of a listener with passthrough names (ioListenPassthrough) whose whole ClientHello
// was queued at accept and names nothing passed through: held (nothing read, no peek), for JS to start the addon's
// TLS handshake on at once (the handshake reads the ClientHello from the kernel).
constexpr int32_t kAcceptTerminate = 12;

constexpr int kMaxEvents = 256;
constexpr size_t kDataSize = 1 << 20;   // one batch's reads
constexpr size_t kReadMax = 64 * 1024;  // one read(2)
constexpr size_t kReadMin = 16 * 1024;  // stop reading this batch when less than this is left
constexpr int kMaxRounds = 8;           // batches per wake-up before yielding to the rest of the loop
constexpr int kAcceptMax = 512;         // accepts per batch, all listeners together (level triggering brings the rest)
// A ready fd pushes at most four events (a TLS one: secure + drain + data + eof/error; a plain one two), an accept
// at most two (accept + its first read's data/eof/error): the event array holds the worst case of a full batch.
constexpr int kEventCap = 4 * kMaxEvents + 2 * kAcceptMax;
// An accepted connection's record in the data buffer: int32 listener id, int32 fd (its number, for JS's descriptor
// budget: no ioFd call per accept), uint16 port, address text.
constexpr size_t kAddrRecordMax = 4 + 4 + 2 + kAddressTextMax;

// What an accepted connection does first, set per listener by JS (and changed by a reload).
constexpr int32_t kModeRead = 0;  // register for reading and read at once (plain HTTP, PROXY preface, ClientHello)
constexpr int32_t kModeHold = 1;  // not read: its bytes stay in the kernel for the next owner (splice, TLS)
// Read without consuming (recv MSG_PEEK from SO_PEEK_OFF), so the connection can still be handed whole to
// uWebSockets.js (adoptSocket) once JS has routed its head; ioCommit turns it into a read-mode connection.
constexpr int32_t kModePeek = 2;
// TCP_DEFER_ACCEPT of a listener whose clients speak first (ioListenDefer), in seconds: how long the kernel keeps a
// connection that only completed its handshake before it is accepted all the same. The kernel counts it in SYN-ACK
// retransmits (1 s = the first one, at the request's first timer, TCP_TIMEOUT_INIT): a silent client ACKs that
// retransmit and is accepted then, ~1 s after its SYN, as with nginx's `listen … deferred`. Longer would only keep
// silent clients (preconnects, idle pools) out of the head timeout's sight longer, and a listener's end must wait
// that long for them (NativeListener.end in io.ts).
constexpr int kDeferAcceptS = 1;

struct Conn {
  int fd = -1;
  uint32_t mask = 0;        // what epoll has for this fd (0 = not registered)
  bool reading = true;      // JS wants data (not paused)
  bool eof = false;         // read(2) returned 0
  bool connecting = false;
  bool dead = false;        // an error was reported; no more events
  bool shutdown_pending = false;
  bool want_drain = false;  // ioSendFile met a full socket: report kDrain once it is writable again
  bool listener = false;    // a listening socket: readiness means connections to accept
  bool ending = false;      // a listener ioListenEnd left open: accept what is queued, then close (kListenEnd)
  int32_t mode = kModeRead; // listener: what its accepted connections do first
  bool defer = false;       // listener: TCP_DEFER_ACCEPT asked for (ioListenDefer)
  // listener in peek mode: the names it passes through (ioListenPassthrough); with them its accept reads the
  // ClientHello once and decides a connection to terminate there (TerminateAtAccept)
  std::shared_ptr<const passthrough::Names> names;
  std::string out;          // bytes the kernel did not take yet (plaintext on a TLS connection)
  size_t out_off = 0;
  tls::Session* tls = nullptr;  // TLS terminated here (tls.cc): reads and writes go through it
  bool handshaking = false;
  bool tls_want_write = false;  // a TLS handshake, read or close_notify waits for room to write
  // OpenSSL read ahead records that no read returned (the batch had no more room): the socket may raise no edge for
  // them, so the connection waits for EPOLLOUT (at once on a socket with room) and reads them then.
  bool tls_buffered = false;
  bool peeking = false;     // kModePeek: reads are recv(MSG_PEEK) and the fd is edge-triggered (see PeekReady)
  // The fd was made here (accept4, socket) and never left: its close(2) also takes it out of the epoll set, so
  // ioClose skips the EPOLL_CTL_DEL (a syscall per connection). False once ioFd gave it out (the splice relay
  // dups it: the description then outlives this close and would stay registered) and for adopted fds.
  bool sole_fd = false;
  // A listener: TCP_NODELAY comes with each accepted connection (Linux copies it from the listening socket; checked
  // on its first accepted one). -1 = not checked yet, 1 = inherited (no setsockopt per accept), 0 = set per accept.
  int8_t nodelay_inherited = -1;
  // listener: its last drained batch held one connection, so the next takes one and does not ask accept4 again
  // (AcceptBatch); the round it was last seen ready in tells a burst (ready again at once) from the next client
  bool one_at_a_time = false;
  uint64_t ready_round = 0;
  // An upstream armed by ioAnswer: its answer is read here and, when response-head.h takes it, relayed to client
  // `answer_to` without JS (one kAnswer record per read instead of a DATA event). 0 = not armed, kAnswerHead = the
  // head is awaited (nothing consumed yet), kAnswerBody = relaying `answer_left` more body bytes.
  int8_t answer = 0;
  bool answer_paused = false;  // reading stopped here while the client's queue is over kAnswerQueueMax
  int32_t answer_to = -1;
  int32_t answer_plan = -1;
  int32_t answer_conn = 0;
  uint64_t answer_left = 0;
  bool answer_keep = false;
  std::string answer_extra;
  // Armed by ioAnswerUpgrade: the answer awaited is a WebSocket upgrade's 101 (response-head.h RewriteUpgrade), whose
  // Sec-WebSocket-Accept must be `answer_accept`; taken, the tunnel's first bytes follow it and JS moves both legs.
  bool answer_upgrade = false;
  std::string answer_accept;
  // A FastCGI upstream armed by ioFcgiAnswer (answer_fcgi): its records are read by fcgi-answer.h; made on its first
  // arming and kept for the next requests of the pooled connection.
  bool answer_fcgi = false;
  fa::Answer* fcgi = nullptr;
  // A client: the armed upstream relaying to it (-1 none); its reading resumes when this queue drains.
  int32_t answer_from = -1;
};

struct State {
  napi_env env = nullptr;
  uv_poll_t poll{};
  int epfd = -1;
  Napi::FunctionReference on_events;
  // The receiver of on_events (the global object), kept from ioInit: env.Global() per batch is a
  // v8::Context::Global call, measurable at one batch per request or two.
  Napi::ObjectReference global_ref;
  Napi::Reference<Napi::ArrayBuffer> events_ref;
  Napi::Reference<Napi::ArrayBuffer> data_ref;
  Napi::AsyncContext* async = nullptr;
  int32_t* events = nullptr;
  uint8_t* data = nullptr;
  std::vector<Conn> conns;
  std::vector<int32_t> free_ids;
  std::vector<int32_t> freed_in_batch;  // reusable only after the batch that may still name them
  bool dispatching = false;
  size_t live = 0;
  bool referenced = false;
  double accepted = 0;       // connections accepted natively, ever
  double accept_batches = 0; // batches that accepted at least one (accepted / batches = the mean batch)
  uint64_t rounds = 0;       // Round()s that found something ready
  std::vector<rh::Plan> plans;  // response sides of routes (ioAnswerPlan), by id
  std::map<std::string, int32_t> plan_ids;  // the same response side (its sorted names) -> its id: made once
  std::string answer_out;       // the rewritten head and the first body bytes, sent as one write
  double answered = 0;          // answers whose head the relay took (ioAnswer), ever
  double upgraded = 0;          // 101s taken and written here (ioAnswerUpgrade), ever
  double started = 0;           // FastCGI exchanges started here (exchange.h), ever
  // Connections of listeners with passthrough names: decided at accept to terminate (kAcceptTerminate), and left
  // to JS's peek path (a name passed through, a hello not whole yet or bad, nothing queued), ever
  double hello_terminated = 0;
  double hello_peeked = 0;
};

State* state = nullptr;

Napi::Error SysError(Napi::Env env, const char* syscall, int err) {
  const char* code = strerrorname_np(err);
  Napi::Error e = Napi::Error::New(env, std::string(syscall) + " " + (code != nullptr ? code : "E?") + ": " + strerror(err));
  e.Set("code", Napi::String::New(env, code != nullptr ? code : "EUNKNOWN"));
  e.Set("errno", Napi::Number::New(env, -err));
  e.Set("syscall", Napi::String::New(env, syscall));
  return e;
}

State& Own(Napi::Env env) {
  if (state == nullptr || state->env != env) throw Napi::Error::New(env, "native io is not initialised in this JS environment (call ioInit first)");
  return *state;
}

int32_t IdArg(const Napi::CallbackInfo& info, State& s) {
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "id must be a number");
  int32_t id = info[0].As<Napi::Number>().Int32Value();
  if (id < 0 || static_cast<size_t>(id) >= s.conns.size() || s.conns[id].fd < 0) throw Napi::Error::New(info.Env(), "unknown io id");
  return id;
}

// IdArg of a listening socket: throws "<fn>: not a listener" for any other connection.
int32_t ListenerIdArg(const Napi::CallbackInfo& info, State& s, const char* fn) {
  int32_t id = IdArg(info, s);
  if (!s.conns[id].listener) throw Napi::TypeError::New(info.Env(), std::string(fn) + ": not a listener");
  return id;
}

void UpdateRef(State& s) {
  bool want = s.live > 0;
  if (want == s.referenced) return;
  if (want) uv_ref(reinterpret_cast<uv_handle_t*>(&s.poll));
  else uv_unref(reinterpret_cast<uv_handle_t*>(&s.poll));
  s.referenced = want;
}

// The epoll mask this connection needs now; registers, changes or removes it.
void Rearm(State& s, Conn& c) {
  uint32_t want = 0;
  if (c.listener) {
    if (c.reading) want = EPOLLIN;
  } else if (!c.dead) {
    if (c.connecting || c.out.size() > c.out_off || c.want_drain || c.tls_want_write || (c.tls_buffered && c.reading)) want |= EPOLLOUT;
    // a TLS handshake reads whatever JS wants: pause() holds back plaintext only
    if (!c.connecting && (c.reading || c.handshaking) && !c.eof) want |= EPOLLIN;
    // a peeked socket stays readable (its bytes are still queued): level triggering would wake the loop forever
    if (c.peeking && (want & EPOLLIN) != 0) want |= EPOLLET;
  }
  if (want == c.mask) return;
  epoll_event ev{};
  ev.events = want;
  ev.data.u32 = static_cast<uint32_t>(&c - s.conns.data());
  int op = c.mask == 0 ? EPOLL_CTL_ADD : (want == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD);
  // EPOLLERR/EPOLLHUP are reported even for an empty mask, so an fd with nothing to wait for leaves the set.
  if (epoll_ctl(s.epfd, op, c.fd, &ev) == 0) c.mask = want;
}

// Takes the fd out of the epoll set (before a close, or while nothing is to be waited for).
void Unregister(State& s, Conn& c) {
  if (c.mask == 0) return;
  epoll_event none{};
  if (epoll_ctl(s.epfd, EPOLL_CTL_DEL, c.fd, &none) == 0) c.mask = 0;
}

int32_t NewConn(State& s, int fd) {
  int32_t id;
  if (!s.free_ids.empty()) {
    id = s.free_ids.back();
    s.free_ids.pop_back();
  } else {
    id = static_cast<int32_t>(s.conns.size());
    s.conns.emplace_back();
  }
  Conn& c = s.conns[id];
  c = Conn();
  c.fd = fd;
  s.live++;
  UpdateRef(s);
  return id;
}

void AnswerOff(State& s, Conn& u);

// `batch`: the id may still be named by events of the batch being built (reusable only after it).
void FreeConn(State& s, int32_t id, bool batch = false) {
  Conn& c = s.conns[id];
  nx::Forget(id);
  // an armed upstream or its client goes: the other side is left as if never armed
  AnswerOff(s, c);
  if (c.answer_from >= 0) AnswerOff(s, s.conns[c.answer_from]);
  delete c.tls;
  c.tls = nullptr;
  delete c.fcgi;
  c.fcgi = nullptr;
  c.fd = -1;
  c.mask = 0;
  std::string().swap(c.out);
  c.out_off = 0;
  (s.dispatching || batch ? s.freed_in_batch : s.free_ids).push_back(id);
  s.live--;
  UpdateRef(s);
}

// Sends queued bytes; 0 when the queue is empty or the kernel is full, else an errno.
int Flush(Conn& c) {
  while (c.out.size() > c.out_off && c.tls != nullptr) {
    size_t wrote = 0;
    tls::Io r = c.tls->Write(c.out.data() + c.out_off, c.out.size() - c.out_off, &wrote);
    c.out_off += wrote;
    if (r == tls::Io::kOk && c.out.size() > c.out_off) return 0;  // the socket is full: EPOLLOUT brings the rest
    if (r == tls::Io::kWantWrite || r == tls::Io::kWantRead) return 0;
    if (r != tls::Io::kOk) return c.tls->sys_errno() != 0 ? c.tls->sys_errno() : EPIPE;
  }
  while (c.out.size() > c.out_off) {
    ssize_t n = send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      return errno;
    }
    c.out_off += static_cast<size_t>(n);
  }
  std::string().swap(c.out);
  c.out_off = 0;
  if (c.shutdown_pending) {
    // TLS: close_notify first; a full socket keeps it pending until EPOLLOUT
    c.tls_want_write = c.tls != nullptr && c.tls->Shutdown() == tls::Io::kWantWrite;
    if (c.tls_want_write) return 0;
    c.shutdown_pending = false;
    ::shutdown(c.fd, SHUT_WR);
  }
  return 0;
}

// Sends p[0..len) now, queueing what the kernel does not take: 0, or an errno (the connection is dead then).
int Send(State& s, Conn& c, const char* p, size_t len) {
  if (c.dead) return EPIPE;
  size_t sent = 0;
  if (c.tls != nullptr && !c.handshaking && c.out.size() == c.out_off) {
    tls::Io r = c.tls->Write(p, len, &sent);
    if (r == tls::Io::kError || r == tls::Io::kEof) {
      int err = c.tls->sys_errno() != 0 ? c.tls->sys_errno() : EPIPE;
      c.dead = true;
      Rearm(s, c);
      return err;
    }
    if (sent == len) return 0;
  } else if (c.tls == nullptr && !c.connecting && c.out.size() == c.out_off) {
    while (sent < len) {
      ssize_t n = send(c.fd, p + sent, len - sent, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        int err = errno;
        c.dead = true;
        Rearm(s, c);
        return err;
      }
      sent += static_cast<size_t>(n);
    }
    if (sent == len) return 0;
  }
  c.out.append(p + sent, len - sent);
  Rearm(s, c);
  return 0;
}

void Push(State& s, int& n, int32_t id, int32_t kind, int32_t a, int32_t b) {
  int32_t* e = s.events + static_cast<size_t>(n) * 4;
  e[0] = id;
  e[1] = kind;
  e[2] = a;
  e[3] = b;
  n++;
}

void Fail(State& s, Conn& c, int& n, int32_t id, int err) {
  c.dead = true;
  Rearm(s, c);
  Push(s, n, id, kError, err, 0);
}

// One read(2) into the batch's data buffer (the caller checked there is room): a DATA, EOF or error event, or
// nothing (EAGAIN). False when the connection failed (its error event is pushed).
bool StartExchange(State& s, Conn& c, int32_t id, int& n, size_t& used, size_t r);

bool ReadOnce(State& s, Conn& c, int32_t id, int& n, size_t& used) {
  size_t room = kDataSize - used;
  ssize_t r;
  do r = read(c.fd, s.data + used, room < kReadMax ? room : kReadMax);
  while (r < 0 && errno == EINTR);
  if (r > 0) {
    if (nx::Ready(id) && StartExchange(s, c, id, n, used, static_cast<size_t>(r))) return true;
    Push(s, n, id, kData, static_cast<int32_t>(used), static_cast<int32_t>(r));
    used += static_cast<size_t>(r);
  } else if (r == 0) {
    c.eof = true;
    Push(s, n, id, kEof, 0, 0);
  } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
    Fail(s, c, n, id, errno);
    return false;
  }
  return true;
}

// ---- the relayed answer (ioAnswer): an armed upstream's response goes to its client without JS ----------------

constexpr int8_t kAnswerHead = 1;  // armed: the head is awaited, nothing consumed yet
constexpr int8_t kAnswerBody = 2;  // the head went out: relaying the rest of the body
// Reading the upstream stops while the client has more than this queued (the client's write queue is the bound).
constexpr size_t kAnswerQueueMax = 64 * 1024;
// A kAnswer record in the data buffer: int32 status, int32 flags, int32 head bytes written, int32 bytes now queued
// for the client (its JS socket's writableLength: a close must not drop them), float64 body bytes relayed by this read.
constexpr size_t kAnswerRecord = 24;
constexpr int32_t kAnsHead = 1;        // the head was accepted and written (status and head bytes are set)
constexpr int32_t kAnsDone = 2;        // the body is whole: the upstream is JS's again
constexpr int32_t kAnsReusable = 4;    // the answer allows the upstream's reuse (HTTP/1.1 without Connection: close)
constexpr int32_t kAnsExtra = 8;       // bytes came after the body (dropped: the upstream must not be reused)
constexpr int32_t kAnsClientGone = 16; // the client failed or closed: the rest was dropped (its own error says why)
// An upgrade's 101 was taken and written (ioAnswerUpgrade): the record is followed by the bytes that came behind the
// 101 in the same read (written to the client with it: the tunnel's first bytes down), `body` of them.
constexpr int32_t kAnsUpgrade = 32;
constexpr int32_t kAnsHandover = 64;   // FastCGI: the rest of this read follows as DATA, JavaScript's from a record's start

// Stops relaying on upstream `u` (done, declined, failed, or JS took it back): reading as JS left it.
void AnswerOff(State& s, Conn& u) {
  if (u.answer == 0) return;
  if (u.answer_to >= 0 && static_cast<size_t>(u.answer_to) < s.conns.size() && s.conns[u.answer_to].answer_from == static_cast<int32_t>(&u - s.conns.data()))
    s.conns[u.answer_to].answer_from = -1;
  u.answer = 0;
  u.answer_to = -1;
  u.answer_fcgi = false;
  std::string().swap(u.answer_extra);
  u.answer_upgrade = false;
  std::string().swap(u.answer_accept);
  if (u.answer_paused) {
    u.answer_paused = false;
    u.reading = true;
  }
}

// A client's queue went down: an upstream waiting for it reads again.
void AnswerResume(State& s, Conn& c) {
  if (c.answer_from < 0 || c.out.size() - c.out_off > kAnswerQueueMax) return;
  Conn& u = s.conns[c.answer_from];
  if (!u.answer_paused) return;
  u.answer_paused = false;
  u.reading = true;
  Rearm(s, u);
}

// `tail`: bytes the caller left right behind the record (an upgrade's first bytes), part of the event.
void PushAnswer(State& s, int& n, int32_t id, size_t& used, int32_t status, int32_t flags, int32_t head_bytes, size_t queued, uint64_t body,
                size_t tail = 0) {
  uint8_t* at = s.data + used;
  int32_t q = queued > 0x7fffffff ? 0x7fffffff : static_cast<int32_t>(queued);
  double b = static_cast<double>(body);
  memcpy(at, &status, 4);
  memcpy(at + 4, &flags, 4);
  memcpy(at + 8, &head_bytes, 4);
  memcpy(at + 12, &q, 4);
  memcpy(at + 16, &b, 8);
  Push(s, n, id, kAnswer, static_cast<int32_t>(used), static_cast<int32_t>(kAnswerRecord + tail));
  used += kAnswerRecord + tail;
}

// An armed upgrade's first read (r bytes at data[used..]): the backend's 101, taken when RewriteUpgrade passes it and
// the client can take it (open, not at EOF). The client gets the 101 JS would write and the bytes that came behind it
// (the backend's first frames) in one write, before JS hears of it: the 101 leaves with no JS on its way. JS gets one
// record with those bytes behind it and moves both connections to a relay (the tunnel's first bytes down are known
// there, and what the client sent is still in the kernel or held by JS). Not taken: JS's, as if never armed.
bool UpgradeData(State& s, Conn& u, int32_t id, int& n, size_t& used, size_t r, Conn* c, bool client_ok) {
  const uint8_t* p = s.data + used;
  rh::Head head;
  if (!client_ok || c->eof || c->handshaking || u.answer_plan < 0 || static_cast<size_t>(u.answer_plan) >= s.plans.size() ||
      !rh::RewriteUpgrade(p, r, s.plans[u.answer_plan], u.answer_extra, u.answer_accept, &head, &s.answer_out)) {
    AnswerOff(s, u);
    return false;
  }
  const size_t rest = r - head.used;
  const int32_t head_bytes = static_cast<int32_t>(s.answer_out.size());
  s.answer_out.append(reinterpret_cast<const char*>(p) + head.used, rest);
  int err = Send(s, *c, s.answer_out.data(), s.answer_out.size());
  if (s.answer_out.capacity() > 64 * 1024) std::string().swap(s.answer_out);
  int32_t flags = kAnsHead | kAnsUpgrade;
  if (err != 0) {
    Push(s, n, u.answer_to, kError, err, 0);
    flags |= kAnsClientGone;
  }
  s.upgraded++;
  const size_t queued = c->dead ? 0 : c->out.size() - c->out_off;
  AnswerOff(s, u);
  // the record goes where the head was read; the bytes behind the 101 move up to follow it (the read left room)
  memmove(s.data + used + kAnswerRecord, p + head.used, rest);
  PushAnswer(s, n, id, used, 101, flags, head_bytes, queued, rest, rest);
  return true;
}

// A FastCGI upstream's read of r bytes at data[used..] (AnswerData's for ioFcgiAnswer): the client's bytes for it
// go out and a kAnswer record takes the read's place; a handed-over rest follows the record as DATA. False: not
// taken (the head did not go out), the read is delivered as DATA untouched.
bool FcgiAnswerData(State& s, Conn& u, int32_t id, int& n, size_t& used, size_t r) {
  Conn* c = u.answer_to >= 0 && static_cast<size_t>(u.answer_to) < s.conns.size() ? &s.conns[u.answer_to] : nullptr;
  bool client_ok = c != nullptr && c->fd >= 0 && !c->dead && c->answer_from == id;
  uint8_t* p = s.data + used;
  fa::Answer& a = *u.fcgi;
  bool head_was = a.head_done;
  if (!head_was && !client_ok) {
    AnswerOff(s, u);
    return false;
  }
  fa::Step step = fa::Feed(a, p, r, &s.answer_out);
  if (step.result == fa::Result::kNotMine) {
    AnswerOff(s, u);
    return false;  // JS's, as if never armed
  }
  int32_t flags = 0;
  int32_t head_bytes = 0;
  if (!head_was) {
    flags = kAnsHead;
    head_bytes = static_cast<int32_t>(a.head.size());
    s.answered++;
  }
  uint64_t body = s.answer_out.size() - static_cast<size_t>(head_bytes);
  if (!client_ok) {
    flags |= kAnsClientGone;
  } else if (!s.answer_out.empty()) {
    int err = Send(s, *c, s.answer_out.data(), s.answer_out.size());
    if (err != 0) {
      Push(s, n, u.answer_to, kError, err, 0);
      flags |= kAnsClientGone;
    }
  }
  if (s.answer_out.capacity() > 64 * 1024) std::string().swap(s.answer_out);
  size_t rest = 0;
  if ((flags & kAnsClientGone) == 0) {
    if (step.result == fa::Result::kDone) flags |= kAnsDone | (step.extra ? kAnsExtra : 0);
    if (step.result == fa::Result::kHandover) {
      flags |= kAnsHandover;
      rest = r - step.used;
    }
  }
  if ((flags & (kAnsDone | kAnsClientGone | kAnsHandover)) != 0) {
    AnswerOff(s, u);
  } else if (c->out.size() - c->out_off > kAnswerQueueMax) {
    // the client is slow: read no more until its queue drains (AnswerResume)
    u.answer_paused = true;
    u.reading = false;
  }
  // the record takes the read's first bytes: the handed-over rest moves behind it (within the read's room)
  if (rest > 0) memmove(p + kAnswerRecord, p + step.used, rest);
  PushAnswer(s, n, id, used, 0, flags, head_bytes, client_ok && !c->dead ? c->out.size() - c->out_off : 0, body);
  if (rest > 0) {
    Push(s, n, id, kData, static_cast<int32_t>(used), static_cast<int32_t>(rest));
    used += rest;
  }
  return true;
}

// An armed upstream's read of r bytes at data[used..]: relayed to the client when this path takes them (a kAnswer
// record in their place), else left for the caller to deliver as DATA (false: not relayed, not consumed).
bool AnswerData(State& s, Conn& u, int32_t id, int& n, size_t& used, size_t r) {
  if (u.answer_fcgi) return FcgiAnswerData(s, u, id, n, used, r);
  Conn* c = u.answer_to >= 0 && static_cast<size_t>(u.answer_to) < s.conns.size() ? &s.conns[u.answer_to] : nullptr;
  bool client_ok = c != nullptr && c->fd >= 0 && !c->dead && c->answer_from == id;
  const uint8_t* p = s.data + used;
  int32_t flags = 0;
  int32_t status = 0;
  int32_t head_bytes = 0;
  uint64_t body = 0;
  if (u.answer == kAnswerHead && u.answer_upgrade) return UpgradeData(s, u, id, n, used, r, c, client_ok);
  if (u.answer == kAnswerHead) {
    rh::Head head;
    if (!client_ok || u.answer_plan < 0 || static_cast<size_t>(u.answer_plan) >= s.plans.size() ||
        !rh::Rewrite(p, r, s.plans[u.answer_plan], u.answer_extra, u.answer_conn, &head, &s.answer_out)) {
      AnswerOff(s, u);
      return false;  // JS's, as if never armed
    }
    size_t rest = r - head.used;
    body = rest < head.content_length ? rest : head.content_length;
    status = head.status;
    head_bytes = static_cast<int32_t>(s.answer_out.size());
    flags = kAnsHead;
    s.answered++;
    u.answer_keep = head.keep_alive;
    u.answer_left = head.content_length - body;
    u.answer = kAnswerBody;
    if (rest > body) flags |= kAnsExtra;
    s.answer_out.append(reinterpret_cast<const char*>(p) + head.used, body);
    int err = Send(s, *c, s.answer_out.data(), s.answer_out.size());
    if (s.answer_out.capacity() > 64 * 1024) std::string().swap(s.answer_out);
    if (err != 0) {
      Push(s, n, u.answer_to, kError, err, 0);
      flags |= kAnsClientGone;
    }
  } else {
    body = r < u.answer_left ? r : u.answer_left;
    if (r > body) flags |= kAnsExtra;
    u.answer_left -= body;
    if (!client_ok) {
      flags |= kAnsClientGone;
    } else if (body > 0) {
      int err = Send(s, *c, reinterpret_cast<const char*>(p), body);
      if (err != 0) {
        Push(s, n, u.answer_to, kError, err, 0);
        flags |= kAnsClientGone;
      }
    }
  }
  if (u.answer_left == 0 && (flags & kAnsClientGone) == 0) {
    flags |= kAnsDone;
    if (u.answer_keep && (flags & kAnsExtra) == 0) flags |= kAnsReusable;
  }
  if ((flags & (kAnsDone | kAnsClientGone | kAnsExtra)) != 0) {
    AnswerOff(s, u);
  } else if (c->out.size() - c->out_off > kAnswerQueueMax) {
    // the client is slow: read no more until its queue drains (AnswerResume)
    u.answer_paused = true;
    u.reading = false;
  }
  PushAnswer(s, n, id, used, status, flags, head_bytes, client_ok && !c->dead ? c->out.size() - c->out_off : 0, body);
  return true;
}

// One read(2) of an armed upstream: relayed (AnswerData), or DATA/EOF/error as ReadOnce. An EOF or error ends the
// relay; JS hears of it as of any socket's and fails or finishes the exchange as without the relay.
bool AnswerRead(State& s, Conn& u, int32_t id, int& n, size_t& used) {
  size_t room = kDataSize - used - kAnswerRecord;
  ssize_t r;
  do r = read(u.fd, s.data + used, room < kReadMax ? room : kReadMax);
  while (r < 0 && errno == EINTR);
  if (r > 0) {
    if (AnswerData(s, u, id, n, used, static_cast<size_t>(r))) return true;
    Push(s, n, id, kData, static_cast<int32_t>(used), static_cast<int32_t>(r));
    used += static_cast<size_t>(r);
  } else if (r == 0) {
    AnswerOff(s, u);
    u.eof = true;
    Push(s, n, id, kEof, 0, 0);
  } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
    AnswerOff(s, u);
    Fail(s, u, n, id, errno);
    return false;
  }
  return true;
}

// Writes an accepted peer's record (listener id, fd, port, address text) at data[used..]; its length.
size_t AddressRecord(uint8_t* at, int32_t listener, int32_t fd, const sockaddr_storage& ss) {
  char text[kAddressTextMax];
  uint16_t port = 0;
  const size_t len = AddressText(ss, text, &port);
  memcpy(at, &listener, 4);
  memcpy(at + 4, &fd, 4);
  memcpy(at + 8, &port, 2);
  memcpy(at + 10, text, len);
  return 10 + len;
}

// ---- peek mode (kModePeek): the connection's bytes stay queued in the kernel until JS commits ----------------

// Starts peeking on a fresh connection: SO_PEEK_OFF 0 makes each recv(MSG_PEEK) return the bytes after the last
// one peeked (TCP since Linux 6.10). Where the kernel refuses it the connection is an ordinary read-mode one
// (ioPeeking says so; JS then never hands it over whole).
void PeekStart(Conn& c) {
  int zero = 0;
  c.peeking = setsockopt(c.fd, SOL_SOCKET, SO_PEEK_OFF, &zero, sizeof zero) == 0;
}

// Ends peeking. `drop`: how many of the bytes JS has seen (the peek offset) leave the kernel's queue, so reads go on
// after them: all of them (kDropSeen: ioCommit, and a close: a socket closed with unread bytes would send RST, not
// FIN), none (ioRelease: uWebSockets.js reads the head again from its first byte), or a PROXY header's length
// (ioRewind: the addon's TLS then reads the ClientHello from its first byte).
constexpr int64_t kDropSeen = -1;
void PeekEnd(Conn& c, int64_t drop) {
  if (!c.peeking) return;
  c.peeking = false;
  if (drop != 0) {
    int seen = 0;
    socklen_t len = sizeof seen;
    if (getsockopt(c.fd, SOL_SOCKET, SO_PEEK_OFF, &seen, &len) != 0) seen = 0;
    int64_t off = drop < 0 || drop > seen ? seen : drop;
    // MSG_TRUNC on TCP drops bytes without copying; the scratch buffer only bounds a kernel that would copy
    static char scratch[16 * 1024];
    while (off > 0) {
      ssize_t r = recv(c.fd, scratch, off < static_cast<int64_t>(sizeof scratch) ? static_cast<size_t>(off) : sizeof scratch, MSG_TRUNC | MSG_DONTWAIT);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;  // reset or already gone: the next read reports it
      off -= r;
    }
  }
  int none = -1;
  setsockopt(c.fd, SOL_SOCKET, SO_PEEK_OFF, &none, sizeof none);
}

// A peeking connection is readable: peeks until the kernel has nothing new, into one DATA event (as one
// read(2)'s). Edge triggering reports only new bytes, so a peek that may have left something behind re-arms the
// fd (EPOLL_CTL_MOD reports it again next round while it is readable): the batch had no room, the room filled,
// or a FIN came behind the data (its EOF event is the next round's: one event per fd and round).
void PeekReady(State& s, Conn& c, int32_t id, int& n, size_t& used) {
  if (!c.reading || c.eof || c.dead) return;
  size_t room = kDataSize - used < kReadMax ? kDataSize - used : kReadMax;
  size_t got = 0;
  bool again = kDataSize - used < kReadMin;
  int err = 0;
  bool fin = false;
  while (!again) {
    ssize_t r;
    do r = recv(c.fd, s.data + used + got, room - got, MSG_PEEK | MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    if (r > 0) {
      got += static_cast<size_t>(r);
      again = got == room;
    } else if (r == 0) {
      fin = true;
      break;
    } else {
      if (errno != EAGAIN && errno != EWOULDBLOCK) err = errno;
      break;
    }
  }
  if (got > 0) {
    Push(s, n, id, kData, static_cast<int32_t>(used), static_cast<int32_t>(got));
    used += got;
    again = again || fin || err != 0;  // the FIN or the error is reported next round, after these bytes
  } else if (fin) {
    c.eof = true;
    Push(s, n, id, kEof, 0, 0);
    Rearm(s, c);
    return;
  } else if (err != 0) {
    Fail(s, c, n, id, err);
    return;
  }
  if (again) {
    epoll_event ev{};
    ev.events = c.mask;
    ev.data.u32 = static_cast<uint32_t>(id);
    epoll_ctl(s.epfd, EPOLL_CTL_MOD, c.fd, &ev);
  }
}

// A fresh connection of a listener with passthrough names: true when its whole ClientHello is queued already (the
// listener defers accept until the first bytes came) and names nothing `names` passes through (or no name at all,
// or an IP literal): the addon's handshake can take it at once. One recv(MSG_PEEK) into a scratch buffer, nothing
// consumed; everything else (a name passed through, a hello not whole yet, nothing queued, not TLS, malformed, an
// error) is false, and the connection goes the peek path, where JS reads, decides, refuses, times out and logs.
bool TerminateAtAccept(const passthrough::Names& names, int fd) {
  static thread_local uint8_t scratch[hello::kDefaultMax];  // per thread (an addon per worker thread); a bigger hello is an error to the reader
  ssize_t r;
  do r = recv(fd, scratch, sizeof scratch, MSG_PEEK | MSG_DONTWAIT);
  while (r < 0 && errno == EINTR);
  if (r <= 0) return false;
  hello::Result h = hello::Parse(scratch, static_cast<size_t>(r));
  if (h.kind != hello::Kind::kDone) return false;
  return !h.has_sni || names.Match(h.sni) < 0;
}

// Accepts what listener `lid` has waiting, within this batch's room: each connection gets an id and an ACCEPT
// event before any of its bytes; a read-mode listener's connection is read at once (the request usually came
// with the handshake: no second wake-up for it). Errors the client caused are skipped; a resource error (EMFILE,
// ENFILE, ENOBUFS, ENOMEM) pauses the listener and tells JS, which resumes it later: level triggering would
// otherwise spin on a queue it cannot drain. Returns true when the queue was found empty (or cannot be drained).
//
// One at a time: a listener whose last drained batch held a single connection (clients one after another, each
// woken for on its own) takes one and stops, without the
// accept4 that would only find the queue empty (a syscall per connection). When it was ready in the round just
// before as well (more were queued: a burst), it drains the queue again, as every batch did before; so a burst
// costs one round more at its start, and nothing waits longer than the next round. An ending listener drains.
bool AcceptBatch(State& s, int32_t lid, int& n, size_t& used, int& accepted) {
  const int from = accepted;
  {
    Conn& l = s.conns[lid];
    if (l.ending || l.ready_round + 1 == s.rounds) l.one_at_a_time = false;
    l.ready_round = s.rounds;
  }
  while (accepted < kAcceptMax && kDataSize - used >= kAddrRecordMax) {
    Conn& l = s.conns[lid];
    if (l.one_at_a_time && accepted > from) return false;  // level triggering brings the next, if any
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    int fd = accept4(l.fd, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      int err = errno;
      if (err == EINTR || err == ECONNABORTED || err == EPROTO || err == EPERM) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) {
        l.one_at_a_time = accepted - from == 1;
        return true;
      }
      if (l.ending) return true;  // closing anyway: what it could not take is the kernel's to reset
      l.reading = false;
      Rearm(s, l);
      Push(s, n, lid, kAcceptError, err, 0);
      return true;
    }
    accepted++;
    if (l.nodelay_inherited != 1) {
      int on = 0;
      socklen_t olen = sizeof on;
      if (l.nodelay_inherited == -1) l.nodelay_inherited = getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, &olen) == 0 && on != 0 ? 1 : 0;
      int one = 1;
      if (l.nodelay_inherited == 0) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    int32_t mode = l.mode;
    bool terminate = false;
    if (mode == kModePeek && l.names != nullptr) {
      terminate = TerminateAtAccept(*l.names, fd);
      if (terminate) mode = kModeHold;
      (terminate ? s.hello_terminated : s.hello_peeked)++;
    }
    int32_t id = NewConn(s, fd);  // may grow the table: `l` is not used below
    Conn& c = s.conns[id];
    c.sole_fd = true;
    c.reading = mode != kModeHold;
    if (mode == kModePeek) PeekStart(c);
    size_t rec = AddressRecord(s.data + used, lid, fd, ss);
    Push(s, n, id, terminate ? kAcceptTerminate : kAccept, static_cast<int32_t>(used), static_cast<int32_t>(rec));
    used += rec;
    if (!c.reading) continue;
    Rearm(s, c);
    if (c.mask == 0) {
      Fail(s, c, n, id, errno != 0 ? errno : ENOMEM);  // epoll_ctl refused it: JS closes it
      continue;
    }
    if (c.peeking) PeekReady(s, c, id, n, used);
    else if (kDataSize - used >= kReadMin) ReadOnce(s, c, id, n, used);
  }
  return false;  // the batch is full: level triggering brings the rest
}

// The end of a listener that ioListenEnd left open: its fd closes and JS hears of it (the id stays unused until
// the batch naming it is dispatched).
void EndListener(State& s, int32_t lid, int& n) {
  Conn& l = s.conns[lid];
  if (!l.sole_fd) Unregister(s, l);
  close(l.fd);
  FreeConn(s, lid, true);
  Push(s, n, lid, kListenEnd, 0, 0);
}

// A TLS record's plaintext is at most this: a read offered this much room takes a whole record. Records read ahead
// past the batch's room stay in OpenSSL, where level-triggered epoll cannot see them: tls_buffered revisits them.
constexpr size_t kTlsRecord = 16 * 1024;

// The TLS handshake failed or the client left during it: JS gets an error (ECONNRESET when it just left).
void TlsFailed(State& s, Conn& c, int& n, int32_t id, tls::Io r) {
  Fail(s, c, n, id, r == tls::Io::kEof ? ECONNRESET : (c.tls->sys_errno() != 0 ? c.tls->sys_errno() : EPROTO));
}

// One ready TLS connection: handshake steps, then flush queued plaintext, then read records into the batch
// (several per wake-up, one DATA event for them, at most kReadMax).
void TlsReady(State& s, Conn& c, int32_t id, uint32_t got, int& n, size_t& used) {
  bool fresh = false;
  if (c.handshaking) {
    tls::Io r = c.tls->Handshake();
    c.tls_want_write = r == tls::Io::kWantWrite;
    if (r == tls::Io::kWantRead || r == tls::Io::kWantWrite) {
      Rearm(s, c);
      return;
    }
    if (r != tls::Io::kOk) {
      TlsFailed(s, c, n, id, r);
      return;
    }
    c.handshaking = false;
    fresh = true;  // the client's first request may have come with its Finished
    // read ahead with it: a connection JS has not resumed yet reads it on resume, when the socket may be silent
    c.tls_buffered = c.tls->Pending();
    Push(s, n, id, kSecure, 0, 0);
  }
  bool writable = (got & EPOLLOUT) != 0;
  bool read_waited_for_room = c.tls_want_write && writable;
  if (read_waited_for_room) c.tls_want_write = false;
  if ((writable || fresh) && (c.out.size() > c.out_off || c.shutdown_pending)) {
    bool had = c.out.size() > c.out_off;
    int ferr = Flush(c);
    if (ferr != 0) {
      Fail(s, c, n, id, ferr);
      return;
    }
    if (had && c.out.empty()) Push(s, n, id, kDrain, 0, 0);
    AnswerResume(s, c);
  }
  bool readable = (got & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0 || fresh || read_waited_for_room || c.tls_buffered;
  if (readable && c.reading && !c.eof) {
    size_t start = used;
    tls::Io r = tls::Io::kOk;
    while (kDataSize - used >= kTlsRecord && used - start + kTlsRecord <= kReadMax) {
      size_t took = 0;
      r = c.tls->Read(reinterpret_cast<char*>(s.data) + used, kReadMax - (used - start), &took);
      if (r != tls::Io::kOk) break;
      used += took;
      if (c.tls->Drained()) break;  // the next read would only meet EAGAIN (a syscall per request saved)
    }
    if (used > start) Push(s, n, id, kData, static_cast<int32_t>(start), static_cast<int32_t>(used - start));
    c.tls_buffered = r == tls::Io::kOk && c.tls->Pending();
    if (r == tls::Io::kWantWrite) c.tls_want_write = true;
    if (r == tls::Io::kEof) {
      c.eof = true;
      Push(s, n, id, kEof, 0, 0);
    } else if (r == tls::Io::kError) {
      Fail(s, c, n, id, c.tls->sys_errno() != 0 ? c.tls->sys_errno() : EPROTO);
      return;
    }
  } else if ((got & EPOLLERR) != 0) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
    Fail(s, c, n, id, err != 0 ? err : ECONNRESET);
    return;
  }
  if ((got & EPOLLHUP) != 0 && (!c.reading || c.eof) && c.out.size() == c.out_off && !c.tls_want_write) {
    Unregister(s, c);
    return;
  }
  Rearm(s, c);
}

// One epoll batch: read every ready socket, flush every writable one, then one JS call. Returns the events taken.
int Round(State& s) {
  epoll_event evs[kMaxEvents];
  int ready = epoll_wait(s.epfd, evs, kMaxEvents, 0);
  if (ready <= 0) return 0;
  s.rounds++;
  int n = 0;
  size_t used = 0;
  int accepted = 0;
  for (int i = 0; i < ready; i++) {
    int32_t id = static_cast<int32_t>(evs[i].data.u32);
    if (static_cast<size_t>(id) >= s.conns.size()) continue;
    if (s.conns[id].listener) {
      if (s.conns[id].fd >= 0 && s.conns[id].reading && AcceptBatch(s, id, n, used, accepted) && s.conns[id].ending) EndListener(s, id, n);
      continue;
    }
    Conn& c = s.conns[id];
    if (c.fd < 0 || c.dead) continue;
    nx::Spoke(id);  // a lent FPM connection that reads anything (bytes, FIN, error) is not lent any more
    uint32_t got = evs[i].events;
    if (c.tls != nullptr) {
      TlsReady(s, c, id, got, n, used);
      continue;
    }
    if (c.connecting) {
      int err = 0;
      socklen_t len = sizeof err;
      if (getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
      if (err == 0 && (got & (EPOLLOUT | EPOLLERR | EPOLLHUP)) == 0) continue;
      if (err == 0 && (got & (EPOLLERR | EPOLLHUP)) != 0) err = ECONNREFUSED;
      if (err != 0) {
        c.dead = true;
        Rearm(s, c);
        Push(s, n, id, kConnect, err, 0);
        continue;
      }
      c.connecting = false;
      Push(s, n, id, kConnect, 0, 0);
      bool had = c.out.size() > c.out_off;
      int ferr = Flush(c);
      if (ferr != 0) {
        Fail(s, c, n, id, ferr);
        continue;
      }
      if (had && c.out.empty()) Push(s, n, id, kDrain, 0, 0);
      Rearm(s, c);
      continue;
    }
    if ((got & EPOLLOUT) != 0 && c.out.size() > c.out_off) {
      int ferr = Flush(c);
      if (ferr != 0) {
        Fail(s, c, n, id, ferr);
        continue;
      }
      if (c.out.empty()) Push(s, n, id, kDrain, 0, 0);
      AnswerResume(s, c);
    }
    if ((got & EPOLLOUT) != 0 && c.want_drain && c.out.size() == c.out_off) {
      c.want_drain = false;
      Push(s, n, id, kDrain, 0, 0);
    }
    if (c.peeking && (got & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0 && c.reading && !c.eof) {
      PeekReady(s, c, id, n, used);
      continue;
    }
    if ((got & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0 && c.reading && !c.eof) {
      if (kDataSize - used < kReadMin) {
        Rearm(s, c);
        continue;  // level-triggered: read next round
      }
      if (!(c.answer != 0 ? AnswerRead(s, c, id, n, used) : ReadOnce(s, c, id, n, used))) continue;
    } else if ((got & EPOLLERR) != 0) {
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
      Fail(s, c, n, id, err != 0 ? err : ECONNRESET);
      continue;
    }
    // Not reading (paused or after EOF) and the peer hung up: leave the set until JS resumes or closes.
    if ((got & EPOLLHUP) != 0 && (!c.reading || c.eof) && c.out.size() == c.out_off) {
      Unregister(s, c);
      continue;
    }
    Rearm(s, c);
  }
  if (accepted > 0) {
    s.accepted += accepted;
    s.accept_batches++;
  }
  if (n > 0) {
    Napi::Env env(s.env);
    Napi::HandleScope scope(env);
    s.dispatching = true;
    try {
      s.on_events.MakeCallback(s.global_ref.Value(), {Napi::Number::New(env, n)}, *s.async);
    } catch (const Napi::Error& e) {
      s.dispatching = false;
      napi_fatal_exception(s.env, e.Value());
    }
    s.dispatching = false;
    nx::BatchDone();
    for (int32_t id : s.freed_in_batch) s.free_ids.push_back(id);
    s.freed_in_batch.clear();
  }
  return ready;
}

void OnPoll(uv_poll_t* /*handle*/, int status, int /*events*/) {
  if (state == nullptr || status < 0) return;
  for (int round = 0; round < kMaxRounds; round++) {
    if (Round(*state) < kMaxEvents) break;
  }
}

void SetupSocket(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags >= 0 && (flags & O_NONBLOCK) == 0) fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// ioInit(onEvents) -> { events: Int32Array-able ArrayBuffer, data: ArrayBuffer, maxEvents }
Napi::Value Init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsFunction()) throw Napi::TypeError::New(env, "ioInit(onEvents: (count) => void)");
  if (state != nullptr) throw Napi::Error::New(env, "native io is already initialised");
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) throw Napi::Error::New(env, "no libuv loop");
  int epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) throw SysError(env, "epoll_create1", errno);
  auto* s = new State();
  s->env = env;
  s->epfd = epfd;
  s->on_events = Napi::Persistent(info[0].As<Napi::Function>());
  s->global_ref = Napi::Persistent(env.Global());
  Napi::ArrayBuffer events = Napi::ArrayBuffer::New(env, kEventCap * 4 * sizeof(int32_t));
  Napi::ArrayBuffer data = Napi::ArrayBuffer::New(env, kDataSize);
  s->events_ref = Napi::Persistent(events);
  s->data_ref = Napi::Persistent(data);
  s->events = static_cast<int32_t*>(events.Data());
  s->data = static_cast<uint8_t*>(data.Data());
  s->async = new Napi::AsyncContext(env, "portico-io");
  if (uv_poll_init(loop, &s->poll, epfd) != 0) {
    close(epfd);
    delete s->async;
    delete s;
    throw Napi::Error::New(env, "uv_poll_init failed");
  }
  uv_poll_start(&s->poll, UV_READABLE, OnPoll);
  uv_unref(reinterpret_cast<uv_handle_t*>(&s->poll));
  state = s;
  Napi::Object out = Napi::Object::New(env);
  out.Set("events", events);
  out.Set("data", data);
  out.Set("maxEvents", Napi::Number::New(env, kEventCap));
  return out;
}

// ioAdopt(fd) -> id: takes the fd (a connected TCP socket); reading starts at once.
Napi::Value Adopt(const Napi::CallbackInfo& info) {
  State& s = Own(info.Env());
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "ioAdopt(fd)");
  int fd = info[0].As<Napi::Number>().Int32Value();
  if (fd < 0) throw Napi::TypeError::New(info.Env(), "fd must be a non-negative integer");
  SetupSocket(fd);
  int32_t id = NewConn(s, fd);
  Conn& c = s.conns[id];
  Rearm(s, c);
  if (c.mask == 0) {
    int err = errno;
    FreeConn(s, id);
    throw SysError(info.Env(), "epoll_ctl", err);
  }
  return Napi::Number::New(info.Env(), id);
}

// ioAdoptTls(fd, serverId) -> id: takes the fd (an accepted TCP socket nobody read from) and runs the server
// side of a TLS handshake on it with the contexts of tlsServerNew(serverId); SECURE (or an error) follows.
Napi::Value AdoptTls(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  State& s = Own(env);
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) throw Napi::TypeError::New(env, "ioAdoptTls(fd, serverId)");
  int fd = info[0].As<Napi::Number>().Int32Value();
  if (fd < 0) throw Napi::TypeError::New(env, "fd must be a non-negative integer");
  std::string error;
  tls::Session* session = tls::Session::New(info[1].As<Napi::Number>().Int32Value(), fd, &error);
  if (session == nullptr) throw Napi::Error::New(env, "ioAdoptTls: " + error);
  SetupSocket(fd);
  int32_t id = NewConn(s, fd);
  Conn& c = s.conns[id];
  c.tls = session;
  c.handshaking = true;
  Rearm(s, c);
  if (c.mask == 0) {
    int err = errno;
    FreeConn(s, id);
    throw SysError(env, "epoll_ctl", err);
  }
  return Napi::Number::New(env, id);
}

// ioListen(fd, mode) -> id: takes a listening socket (non-blocking) and accepts on it in every batch; each
// connection comes to JS as an ACCEPT event. mode: 0 = read accepted connections at once, 1 = hold them unread.
Napi::Value Listen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  State& s = Own(env);
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) throw Napi::TypeError::New(env, "ioListen(fd, mode)");
  int fd = info[0].As<Napi::Number>().Int32Value();
  int32_t mode = info[1].As<Napi::Number>().Int32Value();
  if (fd < 0) throw Napi::TypeError::New(env, "fd must be a non-negative integer");
  if (mode != kModeRead && mode != kModeHold && mode != kModePeek) throw Napi::RangeError::New(env, "ioListen: mode must be 0 (read), 1 (hold) or 2 (peek)");
  int flags = fcntl(fd, F_GETFL);
  if (flags >= 0 && (flags & O_NONBLOCK) == 0) fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  // accepted connections inherit it (AcceptBatch checks once): no setsockopt per connection
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  int32_t id = NewConn(s, fd);
  Conn& c = s.conns[id];
  c.listener = true;
  c.mode = mode;
  Rearm(s, c);
  if (c.mask == 0) {
    int err = errno;
    FreeConn(s, id);  // the fd stays the caller's
    throw SysError(env, "epoll_ctl", err);
  }
  return Napi::Number::New(env, id);
}

// ioListenMode(id, mode): what the listener's next accepted connections do first (a reload may change it).
Napi::Value ListenMode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  State& s = Own(env);
  int32_t id = ListenerIdArg(info, s, "ioListenMode");
  int32_t mode = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : -1;
  if (mode != kModeRead && mode != kModeHold && mode != kModePeek) throw Napi::RangeError::New(env, "ioListenMode: mode must be 0 (read), 1 (hold) or 2 (peek)");
  s.conns[id].mode = mode;
  return env.Undefined();
}

// Reads a JS array of strings (names) into `out`; false when it is not one.
bool StringsArg(const Napi::Value& v, std::vector<std::string>* out) {
  if (!v.IsArray()) return false;
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value e = a.Get(i);
    if (!e.IsString()) return false;
    out->push_back(e.As<Napi::String>().Utf8Value());
  }
  return true;
}

// ioListenPassthrough(id, names | null): the `sni` values a peek-mode listener passes through (a TLS listener with
// certificates and passthrough names, without a PROXY header); its next accepted connections whose ClientHello is
// whole and names none of them are decided there (kAcceptTerminate). null: none, every connection is peeked. A
// reload replaces the table; connections already accepted keep what they were given.
Napi::Value ListenPassthrough(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  State& s = Own(env);
  int32_t id = ListenerIdArg(info, s, "ioListenPassthrough");
  std::vector<std::string> names;
  if (info.Length() < 2 || (!info[1].IsNull() && !StringsArg(info[1], &names))) throw Napi::TypeError::New(env, "ioListenPassthrough(id, names | null)");
  s.conns[id].names = info[1].IsNull() ? nullptr : std::make_shared<const passthrough::Names>(names);
  return env.Undefined();
}

// passthroughMatch(names, sni) -> the index of the entry of `names` that passes `sni` through, or -1: the addon's
// table (passthrough-names.h) on its own, for the differential test against tunnel/l4.ts PassthroughTable.
Napi::Value PassthroughMatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<std::string> names;
  if (info.Length() < 2 || !StringsArg(info[0], &names) || !info[1].IsString()) throw Napi::TypeError::New(env, "passthroughMatch(names, sni)");
  return Napi::Number::New(env, passthrough::Names(names).Match(info[1].As<Napi::String>().Utf8Value()));
}

// Sets (on) or clears TCP_DEFER_ACCEPT on a listener's socket; false when the kernel refused it.
bool SetDefer(Conn& l, bool on) {
  int secs = on ? kDeferAcceptS : 0;
  if (setsockopt(l.fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof secs) != 0) return false;
  l.defer = on;
  return true;
}

// ioListenDefer(id[, on]) -> seconds: with `on`, sets (a listener whose clients speak first: the connection wakes the
// worker once, with its first bytes, not once at the handshake and again for them) or clears TCP_DEFER_ACCEPT;
// returns what the kernel has now (getsockopt: 0 = accepted at the handshake). Clearing it also frees, at once, a
// connection whose handshake completes from now on, and any waiting one with its first byte (as always) or its
// request's next timer (tcp_check_req, syn_ack_recalc: the kernel reads the option when a packet or a timer comes).
Napi::Value ListenDefer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  State& s = Own(env);
  Conn& l = s.conns[ListenerIdArg(info, s, "ioListenDefer")];
  if (info.Length() > 1 && info[1].IsBoolean() && !SetDefer(l, info[1].As<Napi::Boolean>().Value())) throw SysError(env, "setsockopt", errno);
  int secs = 0;
  socklen_t len = sizeof secs;
  if (getsockopt(l.fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, &len) != 0) throw SysError(env, "getsockopt", errno);
  return Napi::Number::New(env, secs);
}

// A request sock whose SYN-ACK was resent more than this long ago is not a client held back by TCP_DEFER_ACCEPT: one
// that ACKed is held only until its request's first timer (kDeferAcceptS = one retransmit: tcp_check_req stops
// dropping its bare ACK from then on), whose resent SYN-ACK it ACKs again within a round trip, and is accepted then.
constexpr uint32_t kSynAckRttMs = 250;
// The kernel's first SYN-ACK timeout (TCP_TIMEOUT_INIT), doubled at each resend (reqsk_timer_handler).
constexpr uint32_t kSynAckTimeoutMs = 1000;

// Whether any connection of `family` whose local port is `port` is in a SYN queue and may be a client (request socks:
// handshake in progress, or done and held back by TCP_DEFER_ACCEPT): 1 yes, 0 no, -1 when the kernel's list cannot
// be read. A sock_diag dump of the SYN_RECV state (what `ss -tn state syn-recv sport = :port` reads), filtered by the
// kernel to the port (inet_diag bytecode), read up to the first request that may be a client: one whose SYN-ACK was
// never resent (idiag_retrans 0), or resent within kSynAckRttMs (its client's ACK may be on its way). The rest, whose
// SYN-ACK went unanswered for a second or more (a SYN flood's spoofed sources: they stay until tcp_synack_retries
// runs out, up to a minute), are passed over: a client the kernel held would have been accepted by now. The record
// has no "ACKed" bit, so a flood's requests younger than a second still count. Every listener of the port counts
// (other workers' SO_REUSEPORT sockets, a new primary's): the caller takes it as "may still be mine".
int SynQueued(int family, uint16_t port) {
  int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) return -1;
  struct {
    nlmsghdr nlh;
    inet_diag_req_v2 req;
    nlattr attr;
    inet_diag_bc_op ops[2];  // sport == port: yes -> end of the program (match), no -> past it (no match)
  } msg{};
  msg.nlh.nlmsg_len = sizeof msg;
  msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  msg.req.sdiag_family = static_cast<uint8_t>(family);
  msg.req.sdiag_protocol = IPPROTO_TCP;
  msg.req.idiag_states = 1u << TCP_SYN_RECV;  // request socks are dumped in this state
  msg.attr.nla_type = INET_DIAG_REQ_BYTECODE;
  msg.attr.nla_len = static_cast<uint16_t>(NLA_HDRLEN + sizeof msg.ops);
  msg.ops[0] = inet_diag_bc_op{INET_DIAG_BC_S_EQ, sizeof msg.ops, sizeof msg.ops + 4};
  msg.ops[1].no = port;
  static_assert(sizeof msg == NLMSG_LENGTH(sizeof(inet_diag_req_v2)) + NLA_HDRLEN + 2 * sizeof(inet_diag_bc_op), "no padding");
  sockaddr_nl to{};
  to.nl_family = AF_NETLINK;
  if (sendto(fd, &msg, sizeof msg, 0, reinterpret_cast<sockaddr*>(&to), sizeof to) < 0) {
    close(fd);
    return -1;
  }
  alignas(nlmsghdr) char buf[8 * 1024];
  int found = -1;
  while (found < 0) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    int left = static_cast<int>(n);
    for (nlmsghdr* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_type == NLMSG_DONE) {
        found = 0;
        break;
      }
      if (h->nlmsg_type == NLMSG_ERROR || h->nlmsg_len < NLMSG_LENGTH(sizeof(inet_diag_msg))) break;
      // the filter already matched; checked again in case a kernel ignored it
      const inet_diag_msg* r = static_cast<const inet_diag_msg*>(NLMSG_DATA(h));
      if (ntohs(r->id.idiag_sport) != port) continue;
      bool young = r->idiag_retrans == 0 || (r->idiag_retrans == 1 && r->idiag_expires + kSynAckRttMs > 2 * kSynAckTimeoutMs);
      if (young) {
        found = 1;
        break;
      }
    }
    if (left > 0 && found < 0) break;  // an error message, or a malformed one
  }
  close(fd);  // the rest of the dump, if any, is dropped with the socket
  return found;
}

// ioSynQueued(id) -> 1 when some connection on the listener's port is still in a SYN queue, else 0 (SynQueued, IPv4
// and IPv6: a dual-stack socket's requests are IPv6); -1 when the kernel's list cannot be read.
Napi::Value SynQueuedOf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  State& s = Own(env);
  Conn& l = s.conns[ListenerIdArg(info, s, "ioSynQueued")];
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getsockname(l.fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return Napi::Number::New(env, -1);
  uint16_t port = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  int v4 = SynQueued(AF_INET, port);
  if (v4 > 0) return Napi::Number::New(env, 1);
  int v6 = SynQueued(AF_INET6, port);
  return Napi::Number::New(env, v4 < 0 || v6 < 0 ? -1 : v6);
}

// ioRelease(id) -> fd: the connection leaves this table without being closed (its new owner is Node's TLS, for
// now); what was queued for it is dropped, so only a connection that wrote nothing is released.
Napi::Value Release(const Napi::CallbackInfo& info) {
  State& s = Own(info.Env());
  int32_t id = IdArg(info, s);
  Conn& c = s.conns[id];
  int fd = c.fd;
  // a listener's next owner (the L4 thread) accepts at the handshake, and its end closes at once: no deferral there
  if (c.listener && c.defer) SetDefer(c, false);
  Unregister(s, c);
  PeekEnd(c, 0);  // a peeked head stays queued: the new owner reads it from its first byte
  FreeConn(s, id);
  return Napi::Number::New(info.Env(), fd);
}

// ioListenEnd(id) -> closed now: a listener stops accepting without resetting what its accept queue holds. An
// empty queue closes it at once (true); else the next batches accept what waits (ACCEPT events as usual) and the
// fd closes once accept4 finds the queue empty, with a LISTEN_END event (false). Closing at once would reset the
// queued connections: clients the kernel already completed a handshake with (a hand-over, a shutdown).
Napi::Value ListenEnd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  State& s = Own(env);
  int32_t id = ListenerIdArg(info, s, "ioListenEnd");
  Conn& l = s.conns[id];
  pollfd p{l.fd, POLLIN, 0};
  if (poll(&p, 1, 0) > 0 && (p.revents & POLLIN) != 0) {
    l.ending = true;
    l.reading = true;  // a paused listener (EMFILE) tries once more; AcceptBatch ends it on any error
    Rearm(s, l);
    if (l.mask != 0) return Napi::Boolean::New(env, false);
    // epoll refused it: nothing would ever accept the queue
  }
  if (!l.sole_fd) Unregister(s, l);
  close(l.fd);
  FreeConn(s, id);
  return Napi::Boolean::New(env, true);
}

// ioStartTls(id, serverId): a natively accepted connection that nobody read from (a hold-mode listener's) starts
// the server side of a TLS handshake with the contexts of tlsServerNew(serverId), reading from now on; SECURE
// (or an error) follows. Throws (the connection unchanged) when it is not such a connection or OpenSSL refuses.
Napi::Value StartTls(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  State& s = Own(env);
  int32_t id = IdArg(info, s);
  if (info.Length() < 2 || !info[1].IsNumber()) throw Napi::TypeError::New(env, "ioStartTls(id, serverId)");
  Conn& c = s.conns[id];
  if (c.listener || c.tls != nullptr || c.connecting || c.dead || c.eof || c.out.size() > c.out_off) {
    throw Napi::Error::New(env, "ioStartTls: not a fresh accepted connection");
  }
  std::string error;
  tls::Session* session = tls::Session::New(info[1].As<Napi::Number>().Int32Value(), c.fd, &error);
  if (session == nullptr) throw Napi::Error::New(env, "ioStartTls: " + error);
  c.tls = session;
  c.handshaking = true;
  // Plaintext is read as soon as the handshake is done, paused or not: a held connection's NativeSocket keeps it
  // until JS resumes, which it does while dispatching SECURE. Held unread instead, the socket would leave the epoll
  // set at SECURE and come back at the resume (two epoll_ctl per connection).
  bool was_reading = c.reading;
  c.reading = true;
  Rearm(s, c);
  if (c.mask == 0) {
    int err = errno;
    c.reading = was_reading;
    delete c.tls;
    c.tls = nullptr;
    c.handshaking = false;
    throw SysError(env, "epoll_ctl", err);
  }
  return env.Undefined();
}

// ioTlsInfo(id) -> { version, cipher, alpn, servername, resumed } | null (not TLS); ioTlsError(id) -> why it failed.
Napi::Value TlsInfo(const Napi::CallbackInfo& info) {
  State& s = Own(info.Env());
  const Conn& c = s.conns[IdArg(info, s)];
  if (c.tls == nullptr) return info.Env().Null();
  return tls::Info(info.Env(), *c.tls);
}

Napi::Value TlsError(const Napi::CallbackInfo& info) {
  State& s = Own(info.Env());
  const Conn& c = s.conns[IdArg(info, s)];
  if (c.tls == nullptr) return info.Env().Null();
  return Napi::String::New(info.Env(), c.tls->error());
}

// ioConnect's answer for a connection that is established already (kConnectedNow + id): no CONNECT event follows.
constexpr int32_t kConnectedNow = 1 << 30;

// A loopback destination (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104): its handshake completes inside connect(2)
// itself (the SYN, SYN-ACK and ACK are processed before the syscall returns, although it says EINPROGRESS).
bool Loopback(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET) return (ntohl(reinterpret_cast<const sockaddr_in&>(ss).sin_addr.s_addr) >> 24) == 127;
  const in6_addr& a = reinterpret_cast<const sockaddr_in6&>(ss).sin6_addr;
  return IN6_IS_ADDR_LOOPBACK(&a) || (IN6_IS_ADDR_V4MAPPED(&a) && a.s6_addr[12] == 127);
}

// A connecting (or, with `now`, established) socket into the table: its id, kConnectedNow + id, or -errno (the
// fd closed) when epoll would not take it.
int32_t Connected(State& s, int fd, bool now) {
  int32_t id = NewConn(s, fd);
  Conn& c = s.conns[id];
  c.connecting = !now;
  c.sole_fd = true;
  Rearm(s, c);
  if (c.mask == 0) {
    int err = errno;
    close(fd);
    FreeConn(s, id);
    return -err;
  }
  return now ? kConnectedNow + id : id;
}

// ioConnect(ip, port) -> id (the CONNECT event reports the outcome) | kConnectedNow + id (established already:
// no CONNECT event, JS says 'connect' itself) | -errno when it failed at once. A loopback connection is checked
// with one poll(2) after connect(2): the epoll round trip for its EPOLLOUT (a wake-up of the loop, an
// EPOLL_CTL_MOD, a getsockopt) is saved, the request goes out in the same turn.
Napi::Value Connect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  State& s = Own(env);
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsNumber()) throw Napi::TypeError::New(env, "ioConnect(ip, port)");
  std::string ip = info[0].As<Napi::String>().Utf8Value();
  int port = info[1].As<Napi::Number>().Int32Value();
  if (port < 1 || port > 65535) throw Napi::RangeError::New(env, "port must be 1..65535");
  sockaddr_storage ss{};
  socklen_t len;
  int family;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (inet_pton(AF_INET, ip.c_str(), &v4->sin_addr) == 1) {
    family = AF_INET;
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    len = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, ip.c_str(), &v6->sin6_addr) == 1) {
    family = AF_INET6;
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    len = sizeof(sockaddr_in6);
  } else {
    throw Napi::TypeError::New(env, "ioConnect: not an IP literal: \"" + ip + "\"");
  }
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Napi::Number::New(env, -errno);
  int one = 1;  // non-blocking from socket(): no F_GETFL as SetupSocket's
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  int rc;
  do rc = connect(fd, reinterpret_cast<sockaddr*>(&ss), len);
  while (rc < 0 && errno == EINTR);
  if (rc < 0 && errno != EINPROGRESS) {
    int err = errno;
    close(fd);
    return Napi::Number::New(env, -err);
  }
  bool now = rc == 0;
  if (!now && Loopback(ss)) {
    pollfd p{fd, POLLOUT, 0};
    now = poll(&p, 1, 0) == 1 && p.revents == POLLOUT;  // writable, no error or hang-up: established
  }
  return Napi::Number::New(env, Connected(s, fd, now));
}

// ioConnectUnix(path) -> kConnectedNow + id | -errno, as ioConnect's answers for an AF_UNIX stream socket at
// `path` (absolute, at most sun_path's 107 bytes; no abstract names: config/schema.ts accepts neither). connect(2)
// on a Unix stream socket never says EINPROGRESS on Linux: it is established at once or fails at once; a full
// backlog is EAGAIN, the peer's refusal ECONNREFUSED, a missing path ENOENT, a forbidden one EACCES, each as
// -errno (JS hands such a failure to node:net, which reports it as it always has). No TCP options: there is no TCP.
Napi::Value ConnectUnix(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  State& s = Own(env);
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "ioConnectUnix(path)");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  sockaddr_un sa{};
  if (path.empty() || path[0] != '/' || path.find('\0') != std::string::npos || path.size() >= sizeof sa.sun_path) {
    throw Napi::RangeError::New(env, "ioConnectUnix: not an absolute path of at most 107 bytes");
  }
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, path.data(), path.size());  // NUL-terminated by sa{}
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Napi::Number::New(env, -errno);
  int rc;
  do rc = connect(fd, reinterpret_cast<sockaddr*>(&sa), static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1));
  while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    int err = errno;
    close(fd);
    return Napi::Number::New(env, -err);
  }
  return Napi::Number::New(env, Connected(s, fd, true));
}

// Sends p[0..len) now, queueing what the kernel does not take; bytes queued (0 = all sent) or -errno.
Napi::Value SendOrQueue(Napi::Env env, State& s, int32_t id, const char* p, size_t len) {
  Conn& c = s.conns[id];
  int err = Send(s, c, p, len);
  return Napi::Number::New(env, err != 0 ? -static_cast<double>(err) : static_cast<double>(c.out.size() - c.out_off));
}

// ioWrite(id, bytes: Uint8Array) -> bytes now queued natively (0 = all in the kernel) | -errno.
Napi::Value Write(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  State& s = Own(env);
  int32_t id = IdArg(info, s);
  if (info.Length() < 2 || !info[1].IsTypedArray()) throw Napi::TypeError::New(env, "ioWrite(id, bytes: Uint8Array)");
  Napi::Uint8Array bytes = info[1].As<Napi::Uint8Array>();
  return SendOrQueue(env, s, id, reinterpret_cast<const char*>(bytes.Data()), bytes.ByteLength());
}

// ioWriteLatin1(id, text) -> as ioWrite, for a one-byte string (HTTP heads): no Buffer is made for it in JS.
Napi::Value WriteLatin1(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  State& s = Own(env);
  int32_t id = IdArg(info, s);
  if (info.Length() < 2 || !info[1].IsString()) throw Napi::TypeError::New(env, "ioWriteLatin1(id, text: string)");
  napi_value v = info[1];
  size_t len = 0;
  if (napi_get_value_string_latin1(env, v, nullptr, 0, &len) != napi_ok) throw Napi::Error::New(env, "ioWriteLatin1: not a string");
  static thread_local std::string scratch;
  scratch.resize(len + 1);  // napi writes a terminating NUL
  napi_get_value_string_latin1(env, v, scratch.data(), len + 1, &len);
  return SendOrQueue(env, s, id, scratch.data(), len);
}

// ioRead(id, on): pause (false) or resume (true) reading.
Napi::Value Read(const Napi::CallbackInfo& info) {
  State& s = Own(info.Env());
  int32_t id = IdArg(info, s);
  Conn& c = s.conns[id];
  c.reading = info.Length() > 1 && info[1].ToBoolean();
  Rearm(s, c);
  return info.Env().Undefined();
}

// ioShutdown(id): FIN after the queued bytes.
Napi::Value Shutdown(const Napi::CallbackInfo& info) {
  State& s = Own(info.Env());
  int32_t id = IdArg(info, s);
  Conn& c = s.conns[id];
  if (c.connecting || c.handshaking || c.out.size() > c.out_off) {
    c.shutdown_pending = true;
  } else if (c.tls != nullptr) {
    c.shutdown_pending = true;
    Flush(c);  // close_notify, then the FIN (or both wait for EPOLLOUT)
    Rearm(s, c);
  } else {
    ::shutdown(c.fd, SHUT_WR);
  }
  return info.Env().Undefined();
}

// ioCloseNotify(id) -> true when a TLS connection with nothing queued sent its close_notify now, whole: a close
// may follow at once (its FIN comes after it, as nginx closes). False, nothing changed or the alert waits in
// OpenSSL for room, when it is not such a connection or the socket is full: end() then finishes it as usual.
Napi::Value CloseNotify(const Napi::CallbackInfo& info) {
  State& s = Own(info.Env());
  int32_t id = IdArg(info, s);
  Conn& c = s.conns[id];
  bool sent = c.tls != nullptr && !c.handshaking && !c.dead && !c.shutdown_pending && !c.tls_want_write && c.out.size() == c.out_off &&
              c.tls->Shutdown() == tls::Io::kOk;
  return Napi::Boolean::New(info.Env(), sent);
}

// ioClose(id): closes the fd and drops what is queued.
Napi::Value Close(const Napi::CallbackInfo& info) {
  State& s = Own(info.Env());
  int32_t id = IdArg(info, s);
  Conn& c = s.conns[id];
  if (!c.sole_fd) Unregister(s, c);
  PeekEnd(c, kDropSeen);  // what JS read is off the queue, so the close is a FIN, as after read(2)
  close(c.fd);
  FreeConn(s, id);
  return info.Env().Undefined();
}

// ioKeepAlive(id, on, delaySeconds): TCP keep-alive probes after that much silence (finds peers that vanished).
Napi::Value KeepAlive(const Napi::CallbackInfo& info) {
  State& s = Own(info.Env());
  int32_t id = IdArg(info, s);
  int on = info.Length() > 1 && info[1].ToBoolean() ? 1 : 0;
  int delay = info.Length() > 2 && info[2].IsNumber() ? info[2].As<Napi::Number>().Int32Value() : 0;
  int fd = s.conns[id].fd;
  if (on != 0 && delay > 0) SetKeepAlive(fd, delay);
  else setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  return info.Env().Undefined();
}

// ioSendFile(id, fileFd, offset, count) -> bytes of the file the kernel took with sendfile(2), the page cache
// straight to the socket; fewer than count = the socket is full, a kDrain follows when it is writable.
// -ENODATA when the file ends before offset; -errno on a socket error (the connection is then dead).
Napi::Value SendFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  State& s = Own(env);
  int32_t id = IdArg(info, s);
  if (info.Length() < 4 || !info[1].IsNumber() || !info[2].IsNumber() || !info[3].IsNumber()) throw Napi::TypeError::New(env, "ioSendFile(id, fd, offset, count)");
  int file = info[1].As<Napi::Number>().Int32Value();
  off_t off = static_cast<off_t>(info[2].As<Napi::Number>().Int64Value());
  int64_t count = info[3].As<Napi::Number>().Int64Value();
  Conn& c = s.conns[id];
  if (c.dead) return Napi::Number::New(env, -EPIPE);
  if (c.tls != nullptr) return Napi::Number::New(env, -EOPNOTSUPP);  // the file's bytes would bypass the TLS session
  if (c.connecting || c.out.size() > c.out_off) {
    // bytes written earlier go first: wait until they are in the kernel
    c.want_drain = true;
    Rearm(s, c);
    return Napi::Number::New(env, 0);
  }
  int64_t sent = 0;
  bool full = false;
  while (sent < count) {
    int64_t left = count - sent;
    ssize_t n = sendfile(c.fd, file, &off, static_cast<size_t>(left < (1 << 30) ? left : (1 << 30)));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        full = true;
        break;
      }
      int err = errno;
      c.dead = true;
      Rearm(s, c);
      return Napi::Number::New(env, -err);
    }
    if (n == 0) {
      if (sent == 0) return Napi::Number::New(env, -ENODATA);
      break;
    }
    sent += n;
  }
  if (full) {
    c.want_drain = true;
    Rearm(s, c);
  }
  return Napi::Number::New(env, static_cast<double>(sent));
}

// ioQueued(id) -> bytes still queued here (a DRAIN event can be stale once JS wrote more in the same batch).
Napi::Value Queued(const Napi::CallbackInfo& info) {
  State& s = Own(info.Env());
  const Conn& c = s.conns[IdArg(info, s)];
  return Napi::Number::New(info.Env(), static_cast<double>(c.out.size() - c.out_off));
}

// ioFd(id) -> the fd (still owned here; the splice relay takes a dup of it).
Napi::Value Fd(const Napi::CallbackInfo& info) {
  State& s = Own(info.Env());
  Conn& c = s.conns[IdArg(info, s)];
  c.sole_fd = false;  // a dup may outlive our close: ioClose must unregister explicitly
  return Napi::Number::New(info.Env(), c.fd);
}

// ioAddress(id, local) -> { address, port } of this end (local) or the peer; null when not connected.
Napi::Value Address(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  State& s = Own(env);
  int32_t id = IdArg(info, s);
  bool local = info.Length() > 1 && info[1].ToBoolean();
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  int fd = s.conns[id].fd;
  if ((local ? getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) : getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len)) != 0) return env.Null();
  char text[kAddressTextMax];
  uint16_t port = 0;
  if (AddressText(ss, text, &port) == 0) return env.Null();
  Napi::Object o = Napi::Object::New(env);
  o.Set("address", Napi::String::New(env, text));
  o.Set("port", Napi::Number::New(env, port));
  return o;
}

// A string[] argument (lower-case field names) into `out`; false when it is not an array of strings.
bool NamesArg(Napi::Value v, std::vector<std::string>* out) {
  if (!v.IsArray()) return false;
  Napi::Array names = v.As<Napi::Array>();
  for (uint32_t i = 0; i < names.Length(); i++) {
    Napi::Value name = names.Get(i);
    if (!name.IsString()) return false;
    out->push_back(name.As<Napi::String>().Utf8Value());
  }
  return true;
}

// ioAnswerPlan(skip: string[]) -> plan id: a route's response side for ioAnswer (the lower-case names its head
// rewrite drops). Plans are never freed, so the same set of names gets the same id: every reload compiles its routes
// anew and asks again, and the worker keeps one plan per distinct response side, not one per route per reload.
Napi::Value AnswerPlan(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  State& s = Own(env);
  if (info.Length() < 1 || !info[0].IsArray()) throw Napi::TypeError::New(env, "ioAnswerPlan(skip: string[])");
  rh::Plan plan;
  if (!NamesArg(info[0], &plan.skip)) throw Napi::TypeError::New(env, "ioAnswerPlan: names are strings");
  std::vector<std::string> sorted = plan.skip;
  std::sort(sorted.begin(), sorted.end());
  std::string key;
  for (const std::string& name : sorted) key.append(name).push_back('\n');
  auto found = s.plan_ids.find(key);
  if (found != s.plan_ids.end()) return Napi::Number::New(env, found->second);
  s.plans.push_back(std::move(plan));
  int32_t id = static_cast<int32_t>(s.plans.size() - 1);
  s.plan_ids.emplace(std::move(key), id);
  return Napi::Number::New(env, id);
}

// A one-byte string argument into `out` (latin1); false when it is not a string.
bool Latin1Arg(napi_env env, napi_value v, std::string* out) {
  size_t len = 0;
  if (napi_get_value_string_latin1(env, v, nullptr, 0, &len) != napi_ok) return false;
  out->resize(len + 1);  // napi writes a terminating NUL
  napi_get_value_string_latin1(env, v, out->data(), len + 1, &len);
  out->resize(len);
  return true;
}

// Whether upstream `uid` may relay its answer to client `cid` (ioAnswer, ioAnswerUpgrade, ioFcgiAnswer): a plain, open, reading
// upstream not armed yet, and an open client (plain or TLS terminated here) that no other upstream relays to.
bool Armable(State& s, int32_t uid, int32_t cid) {
  if (cid < 0 || static_cast<size_t>(cid) >= s.conns.size() || cid == uid) return false;
  Conn& u = s.conns[uid];
  Conn& c = s.conns[cid];
  if (u.listener || u.tls != nullptr || u.dead || u.eof || u.peeking || u.connecting || !u.reading || u.answer != 0) return false;
  return !(c.fd < 0 || c.listener || c.dead || c.handshaking || c.answer_from >= 0 || c.answer != 0);
}

// Arms upstream `uid` for client `cid` (Armable said yes; the kind's own fields are set): the head is awaited.
void Arm(State& s, int32_t uid, int32_t cid) {
  Conn& u = s.conns[uid];
  u.answer = kAnswerHead;
  u.answer_to = cid;
  s.conns[cid].answer_from = uid;
}

// A ready client's read of r bytes at data[used..] (exchange.h): when the addon starts the exchange, the records go
// to the lent FPM connection, its answer is armed as ioFcgiAnswer arms it, and a kStarted record with the head behind
// it takes the read's place. False: the read is JS's (delivered as DATA).
bool StartExchange(State& s, Conn& c, int32_t id, int& n, size_t& used, size_t r) {
  if (c.tls != nullptr || c.peeking || used + r + kStartedRecord > kDataSize) {
    nx::Forget(id);
    return false;
  }
  auto usable = [&s, id](int32_t uid) {
    if (static_cast<size_t>(uid) >= s.conns.size()) return false;
    const Conn& u = s.conns[uid];
    return u.fd >= 0 && u.out.size() == u.out_off && !u.shutdown_pending && Armable(s, uid, id);
  };
  nx::Start st;
  if (!nx::Try(id, c.fd, s.data + used, r, usable, &st)) return false;
  const int32_t uid = st.upstream;
  Conn& u = s.conns[uid];
  int err = Send(s, u, st.records.data(), st.records.size());
  if (err != 0) {
    // nothing reached FPM that it will answer: the connection fails as JS's, the read is JS's
    nx::Forget(uid);
    nx::Unstarted();
    Push(s, n, uid, kError, err, 0);
    return false;
  }
  if (st.armed) {
    if (u.fcgi == nullptr) u.fcgi = new fa::Answer();
    u.fcgi->cgi = *st.cgi;
    u.fcgi->head = *st.head;
    u.fcgi->request_id = nx::kRequestId;
    u.fcgi->Reset();
    u.answer_fcgi = true;
    Arm(s, uid, id);
  }
  uint8_t* at = s.data + used;
  memmove(at + kStartedRecord, at, r);
  const int32_t rec[8] = {uid, st.route, st.target, st.armed ? 1 : 0, st.armed ? static_cast<int32_t>(st.cgi->size()) : 0, st.armed ? st.status : 0,
                          static_cast<int32_t>(st.records.size()), st.config};
  memcpy(at, rec, sizeof rec);
  Push(s, n, id, kStarted, static_cast<int32_t>(used), static_cast<int32_t>(kStartedRecord + r));
  used += kStartedRecord + r;
  s.started++;
  return true;
}

// What ioAnswer and ioAnswerUpgrade share: upstream `uid` may relay to client info[1] (Armable) with plan info[2], and
// takes the route's extra lines info[3] and a plain Connection line; the caller sets its kind's fields, then Arm()s.
// Null: it cannot take part (nothing armed).
Conn* HttpArmable(const Napi::CallbackInfo& info, State& s, int32_t uid) {
  int32_t cid = info[1].As<Napi::Number>().Int32Value();
  int32_t plan = info[2].As<Napi::Number>().Int32Value();
  if (plan < 0 || static_cast<size_t>(plan) >= s.plans.size() || !Armable(s, uid, cid)) return nullptr;
  Conn& u = s.conns[uid];
  if (!Latin1Arg(info.Env(), info[3], &u.answer_extra)) return nullptr;
  u.answer_plan = plan;
  u.answer_conn = rh::kConnNone;
  u.answer_left = 0;
  u.answer_keep = false;
  return &u;
}

// ioAnswer(upstream, client, plan, extra, conn) -> true when armed: the upstream's next read is tried as the answer to
// relay to the client (response-head.h); taken, it goes out from here and JS gets kAnswer records; not taken, it comes
// as DATA as always. `extra`: header lines of the route (latin1), `conn`: the Connection line. False (nothing armed)
// for a connection that cannot take part (TLS upstream, closed, at EOF, peeking, a client already served by another).
Napi::Value Answer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  State& s = Own(env);
  int32_t uid = IdArg(info, s);
  if (info.Length() < 5 || !info[1].IsNumber() || !info[2].IsNumber() || !info[3].IsString() || !info[4].IsNumber())
    throw Napi::TypeError::New(env, "ioAnswer(upstream, client, plan, extra, conn)");
  Conn* u = HttpArmable(info, s, uid);
  if (u == nullptr) return Napi::Boolean::New(env, false);
  u->answer_conn = info[4].As<Napi::Number>().Int32Value();
  Arm(s, uid, info[1].As<Napi::Number>().Int32Value());
  return Napi::Boolean::New(env, true);
}

// ioAnswerUpgrade(upstream, client, plan, extra, accept) -> true when armed: the upstream's next read is tried as the
// 101 of the WebSocket upgrade it was sent (RewriteUpgrade, `accept`: the Sec-WebSocket-Accept the client's key asks
// for); taken, the 101 (and what came behind it) goes to the client from here and JS gets one kAnswer record with
// kAnsUpgrade; not taken (another status, a wrong key, a head in pieces), it comes as DATA as always.
// ioAnswerUpgradeKey(upstream, client, plan, extra, key): the same, given the client's Sec-WebSocket-Key, whose
// accept value is computed here (ws-accept.h, Node's OpenSSL) instead of in JavaScript; false (nothing armed) as
// well when OpenSSL could not hash it.
Napi::Value ArmUpgrade(const Napi::CallbackInfo& info, bool from_key) {
  Napi::Env env = info.Env();
  State& s = Own(env);
  int32_t uid = IdArg(info, s);
  if (info.Length() < 5 || !info[1].IsNumber() || !info[2].IsNumber() || !info[3].IsString() || !info[4].IsString())
    throw Napi::TypeError::New(env, from_key ? "ioAnswerUpgradeKey(upstream, client, plan, extra, key)" : "ioAnswerUpgrade(upstream, client, plan, extra, accept)");
  Conn* u = HttpArmable(info, s, uid);
  if (u == nullptr || !Latin1Arg(env, info[4], &u->answer_accept)) return Napi::Boolean::New(env, false);
  if (from_key) {
    u->answer_accept = wsa::Accept(reinterpret_cast<const uint8_t*>(u->answer_accept.data()), u->answer_accept.size());
    if (u->answer_accept.empty()) return Napi::Boolean::New(env, false);  // OpenSSL could not hash: JS checks the 101
  }
  u->answer_upgrade = true;
  Arm(s, uid, info[1].As<Napi::Number>().Int32Value());
  return Napi::Boolean::New(env, true);
}

Napi::Value AnswerUpgrade(const Napi::CallbackInfo& info) { return ArmUpgrade(info, false); }
Napi::Value AnswerUpgradeKey(const Napi::CallbackInfo& info) { return ArmUpgrade(info, true); }

// wsAccept(key) -> the accept value ioAnswerUpgradeKey computes for `key` (a latin1 string): ws-accept.h on its own,
// for the differential test against rewrite.ts websocketAccept; null when OpenSSL could not hash (ioAnswerUpgradeKey
// then arms nothing).
Napi::Value WsAccept(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string key;
  if (info.Length() < 1 || !info[0].IsString() || !Latin1Arg(env, info[0], &key)) throw Napi::TypeError::New(env, "wsAccept(key)");
  std::string accept = wsa::Accept(reinterpret_cast<const uint8_t*>(key.data()), key.size());
  if (accept.empty()) return env.Null();
  return Napi::String::New(env, accept);
}

// ioFcgiAnswer(upstream, client, cgi, head, requestId) -> true when armed: the FastCGI upstream's records are read
// here (fcgi-answer.h); an answer whose first STDOUT bytes are `cgi` goes to the client as `head` and chunks, and JS
// gets kAnswer records; any other comes as DATA as always. False as for ioAnswer.
Napi::Value FcgiAnswer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  State& s = Own(env);
  int32_t uid = IdArg(info, s);
  if (info.Length() < 5 || !info[1].IsNumber() || !info[2].IsTypedArray() || !info[3].IsTypedArray() || !info[4].IsNumber())
    throw Napi::TypeError::New(env, "ioFcgiAnswer(upstream, client, cgi, head, requestId)");
  int32_t cid = info[1].As<Napi::Number>().Int32Value();
  int32_t rid = info[4].As<Napi::Number>().Int32Value();
  Napi::Uint8Array cgi = info[2].As<Napi::Uint8Array>();
  Napi::Uint8Array head = info[3].As<Napi::Uint8Array>();
  if (rid < 1 || rid > 0xffff || cgi.ByteLength() == 0 || !Armable(s, uid, cid)) return Napi::Boolean::New(env, false);
  Conn& u = s.conns[uid];
  if (u.fcgi == nullptr) u.fcgi = new fa::Answer();
  u.fcgi->cgi.assign(reinterpret_cast<const char*>(cgi.Data()), cgi.ByteLength());
  u.fcgi->head.assign(reinterpret_cast<const char*>(head.Data()), head.ByteLength());
  u.fcgi->request_id = static_cast<uint16_t>(rid);
  u.fcgi->Reset();
  u.answer_fcgi = true;
  Arm(s, uid, cid);
  return Napi::Boolean::New(env, true);
}

// fcgiAnswerFeed(reads, cgi, head, requestId) -> [{ result, used, extra, out }] per read, up to the first that is
// not 'more': fcgi-answer.h on its own, for the differential tests against src/wire/fastcgi.ts.
Napi::Value FcgiAnswerFeed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsArray() || !info[1].IsTypedArray() || !info[2].IsTypedArray() || !info[3].IsNumber())
    throw Napi::TypeError::New(env, "fcgiAnswerFeed(reads, cgi, head, requestId)");
  Napi::Array reads = info[0].As<Napi::Array>();
  Napi::Uint8Array cgi = info[1].As<Napi::Uint8Array>();
  Napi::Uint8Array head = info[2].As<Napi::Uint8Array>();
  fa::Answer a;
  a.cgi.assign(reinterpret_cast<const char*>(cgi.Data()), cgi.ByteLength());
  a.head.assign(reinterpret_cast<const char*>(head.Data()), head.ByteLength());
  a.request_id = static_cast<uint16_t>(info[3].As<Napi::Number>().Uint32Value());
  Napi::Array steps = Napi::Array::New(env);
  static const char* const kNames[] = {"more", "done", "handover", "not-mine"};
  std::string out;
  for (uint32_t i = 0; i < reads.Length(); i++) {
    Napi::Uint8Array r = reads.Get(i).As<Napi::Uint8Array>();
    fa::Step step = fa::Feed(a, r.Data(), r.ByteLength(), &out);
    Napi::Object o = Napi::Object::New(env);
    o.Set("result", kNames[static_cast<int>(step.result)]);
    o.Set("used", static_cast<double>(step.used));
    o.Set("extra", step.extra);
    o.Set("out", Napi::Buffer<char>::Copy(env, out.data(), out.size()));
    steps.Set(i, o);
    if (step.result != fa::Result::kMore) break;
  }
  return steps;
}

// ioAnswerOff(upstream, headOnly) -> what it was: 0 not armed, 1 armed with nothing consumed, 2 relaying a body.
// Disarms; with headOnly, a body being relayed goes on.
Napi::Value AnswerOffJs(const Napi::CallbackInfo& info) {
  State& s = Own(info.Env());
  Conn& u = s.conns[IdArg(info, s)];
  int was = u.answer;
  if (was == kAnswerBody && info.Length() > 1 && info[1].ToBoolean()) return Napi::Number::New(info.Env(), was);
  AnswerOff(s, u);
  Rearm(s, u);
  return Napi::Number::New(info.Env(), was);
}

// responseHeadRewrite(bytes, skip, extra, conn | accept) -> { status, used, contentLength, keepAlive, head } | null: the
// C++ head path on its own, for the differential tests against src/wire/http-head.ts and rewrite.ts; with a string
// `accept` in place of `conn`, an upgrade's 101 (RewriteUpgrade).
Napi::Value ResponseHeadRewrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsTypedArray() || !info[1].IsArray() || !info[2].IsString() || !(info[3].IsNumber() || info[3].IsString()))
    throw Napi::TypeError::New(env, "responseHeadRewrite(bytes, skip, extra, conn | accept)");
  Napi::Uint8Array bytes = info[0].As<Napi::Uint8Array>();
  rh::Plan plan;
  if (!NamesArg(info[1], &plan.skip)) throw Napi::TypeError::New(env, "responseHeadRewrite: names are strings");
  std::string extra;
  Latin1Arg(env, info[2], &extra);
  rh::Head head;
  std::string out;
  bool taken;
  if (info[3].IsString()) {
    std::string accept;
    Latin1Arg(env, info[3], &accept);
    taken = rh::RewriteUpgrade(bytes.Data(), bytes.ByteLength(), plan, extra, accept, &head, &out);
  } else {
    taken = rh::Rewrite(bytes.Data(), bytes.ByteLength(), plan, extra, info[3].As<Napi::Number>().Int32Value(), &head, &out);
  }
  if (!taken) return env.Null();
  Napi::Object o = Napi::Object::New(env);
  o.Set("status", head.status);
  o.Set("used", static_cast<double>(head.used));
  o.Set("contentLength", static_cast<double>(head.content_length));
  o.Set("keepAlive", head.keep_alive);
  napi_value str;
  napi_create_string_latin1(env, out.data(), out.size(), &str);
  o.Set("head", Napi::Value(env, str));
  return o;
}

// The test exports' [headSize, uriSize, fields] argument as the head reader's limits.
rq::Limits LimitsArg(const Napi::Array& l) {
  rq::Limits limits;
  limits.head_size = static_cast<size_t>(l.Get(0u).As<Napi::Number>().Int64Value());
  limits.uri_size = static_cast<size_t>(l.Get(1u).As<Napi::Number>().Int64Value());
  limits.fields = l.Get(2u).As<Napi::Number>().Int32Value();
  return limits;
}

// requestHeadRewrite(bytes, [headSize, uriSize, fields], skip, own, forwarded, strip, extra, address, https, serverPort,
// requestId?) -> { used, keepAlive, minor, method, path, query, hostRaw, head } | null: request-head.cc on its own, for
// the differential tests against src/wire/http-head.ts and rewrite.ts buildRequestHead (not on the request path yet).
// `address`: the client's 4 or 16 bytes; `own`: the lower-case names the route removes or sets.
Napi::Value RequestHeadRewrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  rq::Plan plan;
  std::vector<std::string> own;
  if (info.Length() < 10 || !info[0].IsTypedArray() || !info[1].IsArray() || !NamesArg(info[2], &plan.skip) || !NamesArg(info[3], &own) || !info[5].IsString() ||
      !info[6].IsString() || !info[7].IsTypedArray() || !info[9].IsNumber())
    throw Napi::TypeError::New(env, "requestHeadRewrite(bytes, limits, skip, own, forwarded, strip, extra, address, https, serverPort, requestId?)");
  Napi::Uint8Array bytes = info[0].As<Napi::Uint8Array>();
  const rq::Limits limits = LimitsArg(info[1].As<Napi::Array>());
  plan.own = rq::OwnBits(own);
  plan.forwarded = info[4].ToBoolean();
  Latin1Arg(env, info[5], &plan.strip_prefix);
  Latin1Arg(env, info[6], &plan.extra);
  Napi::Uint8Array address = info[7].As<Napi::Uint8Array>();
  rq::Client client;
  if (address.ByteLength() == 4 || address.ByteLength() == 16) {
    client.family = address.ByteLength() == 4 ? AF_INET : AF_INET6;
    std::memcpy(client.addr, address.Data(), address.ByteLength());
  }
  client.https = info[8].ToBoolean();
  client.server_port = info[9].As<Napi::Number>().Int32Value();
  client.has_request_id = info.Length() > 10 && Latin1Arg(env, info[10], &client.request_id);
  auto head = std::make_unique<rq::Head>();
  std::string out;
  if (!rq::Rewrite(bytes.Data(), bytes.ByteLength(), limits, plan, client, head.get(), &out)) return env.Null();
  const char* p = reinterpret_cast<const char*>(bytes.Data());
  auto latin1 = [&](const char* s, size_t n) {
    napi_value v;
    napi_create_string_latin1(env, s, n, &v);
    return Napi::Value(env, v);
  };
  Napi::Object o = Napi::Object::New(env);
  o.Set("used", static_cast<double>(head->used));
  o.Set("keepAlive", head->keep_alive);
  o.Set("minor", head->minor);
  o.Set("method", head->head_method ? "HEAD" : "GET");
  o.Set("lengthZero", head->length_zero);
  o.Set("path", latin1(p + head->target_s, head->query_s - head->target_s));
  o.Set("query", latin1(p + head->query_s, head->target_e - head->query_s));
  o.Set("hostRaw", latin1(p + head->host_s, head->host_e - head->host_s));
  o.Set("host", latin1(p + head->host_s, head->host_name_e - head->host_s));
  o.Set("head", latin1(out.data(), out.size()));
  return o;
}

// A compiled route table held by JS: the addon's holders share it, so a reload's new table replaces it in JS while
// whatever still uses the old one keeps it alive; it is freed when the last holder (the handle's finalizer) lets go.
using rq::SharedRouteTable;
using rq::kRouteTableTag;
// Tables alive (made, not freed yet): the test that a table is freed once nothing holds it reads it.
std::atomic<int64_t> route_tables_live{0};

// routeTableCompile(bytes) -> handle: the bytes src/route/native-routes.ts writes for one config, read once into a
// table that is never changed (route-table.h). Throws on malformed bytes.
Napi::Value RouteTableCompile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray()) throw Napi::TypeError::New(env, "routeTableCompile(bytes)");
  Napi::Uint8Array bytes = info[0].As<Napi::Uint8Array>();
  auto parsed = std::make_unique<rq::RouteTable>();
  std::string error;
  if (!rq::ParseRouteTable(bytes.Data(), bytes.ByteLength(), parsed.get(), &error)) throw Napi::Error::New(env, "routeTableCompile: " + error);
  route_tables_live++;
  SharedRouteTable table(parsed.release(), [](const rq::RouteTable* t) {
    route_tables_live--;
    delete t;
  });
  auto handle = Napi::External<SharedRouteTable>::New(env, new SharedRouteTable(std::move(table)), [](Napi::Env, SharedRouteTable* t) { delete t; });
  handle.TypeTag(&kRouteTableTag);
  return handle;
}

// routeTableLive() -> tables made and not freed yet
Napi::Value RouteTableLive(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(route_tables_live.load()));
}

// routeTableMatch(handle, host, path, method) -> route * 2 + candidate bit, -1 for no route (404), -2 for not mine:
// route-table.cc MatchRoute, for the differential tests and the benchmark (not on the request path yet). The strings go
// in as UTF-8, so any character above 0x7f is a byte MatchRoute refuses.
Napi::Value RouteTableMatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsExternal() || !info[1].IsString() || !info[2].IsString() || !info[3].IsString())
    throw Napi::TypeError::New(env, "routeTableMatch(table, host, path, method)");
  auto handle = info[0].As<Napi::External<SharedRouteTable>>();
  if (!handle.CheckTypeTag(&kRouteTableTag)) throw Napi::TypeError::New(env, "routeTableMatch: not a route table");
  const std::string host = info[1].As<Napi::String>().Utf8Value();
  const std::string path = info[2].As<Napi::String>().Utf8Value();
  const std::string method = info[3].As<Napi::String>().Utf8Value();
  auto u = [](const std::string& s) { return reinterpret_cast<const uint8_t*>(s.data()); };
  const rq::RouteMatch m = rq::MatchRoute(**handle.Data(), u(host), host.size(), u(path), path.size(), u(method), method.size());
  if (m.verdict == rq::RouteVerdict::kNotMine) return Napi::Number::New(env, -2);
  if (m.verdict == rq::RouteVerdict::kNoRoute) return Napi::Number::New(env, -1);
  return Napi::Number::New(env, static_cast<double>(m.route) * 2 + (m.candidate ? 1 : 0));
}

// fcgiRequestRecords(bytes, [headSize, uriSize, fields], fixed, overridden, perRequest, script, remote, remotePort, local,
// serverPort, https, trusted, requestId, keepConn) -> Buffer | null: fcgi-request.cc on its own, for the differential
// tests against src/wire/fastcgi.ts encodeRequestStart and src/handlers/fastcgi-params.ts requestParams (not on the
// request path). `fixed` and `script`: the route's and the script's pairs' bytes; `remote`, `local`: 4 or 16 bytes.
// Per call it makes the plan and the connection the real path would make once per route and per connection.
Napi::Value FcgiRequestRecords(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<std::string> overridden;
  if (info.Length() < 14 || !info[0].IsTypedArray() || !info[1].IsArray() || !info[2].IsTypedArray() || !NamesArg(info[3], &overridden) || !info[5].IsTypedArray() ||
      !info[6].IsTypedArray() || !info[7].IsNumber() || !info[8].IsTypedArray() || !info[9].IsNumber() || !info[12].IsNumber())
    throw Napi::TypeError::New(env, "fcgiRequestRecords(bytes, limits, fixed, overridden, perRequest, script, remote, remotePort, local, serverPort, https, trusted, requestId, keepConn)");
  Napi::Uint8Array bytes = info[0].As<Napi::Uint8Array>();
  const rq::Limits limits = LimitsArg(info[1].As<Napi::Array>());
  Napi::Uint8Array fixed = info[2].As<Napi::Uint8Array>();
  const fq::Plan plan = fq::MakePlan(std::string(reinterpret_cast<const char*>(fixed.Data()), fixed.ByteLength()), overridden, info[4].ToBoolean());
  Napi::Uint8Array script = info[5].As<Napi::Uint8Array>();
  auto client = [](Napi::Uint8Array a) {
    rq::Client c;
    if (a.ByteLength() == 4 || a.ByteLength() == 16) {
      c.family = a.ByteLength() == 4 ? AF_INET : AF_INET6;
      std::memcpy(c.addr, a.Data(), a.ByteLength());
    }
    return c;
  };
  fq::Conn conn;
  if (!fq::MakeConn(client(info[6].As<Napi::Uint8Array>()), info[7].As<Napi::Number>().Int32Value(), client(info[8].As<Napi::Uint8Array>()), info[9].As<Napi::Number>().Int32Value(),
                    info[10].ToBoolean(), info[11].ToBoolean(), &conn))
    return env.Null();
  auto head = std::make_unique<rq::Head>();
  std::string out;
  if (!fq::Records(bytes.Data(), bytes.ByteLength(), limits, plan, conn, reinterpret_cast<const char*>(script.Data()), script.ByteLength(),
                   static_cast<uint16_t>(info[12].As<Napi::Number>().Uint32Value()), info[13].ToBoolean(), head.get(), &out))
    return env.Null();
  return Napi::Buffer<char>::Copy(env, out.data(), out.size());
}

// ioStats() -> { live, accepted, acceptBatches, answered, upgraded }: open connections and listeners (fd-leak tests),
// connections accepted natively and the batches they came in, answers relayed and 101s written here (the admin status).
Napi::Value Stats(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("live", Napi::Number::New(info.Env(), state == nullptr ? 0 : static_cast<double>(state->live)));
  o.Set("accepted", Napi::Number::New(info.Env(), state == nullptr ? 0 : state->accepted));
  o.Set("acceptBatches", Napi::Number::New(info.Env(), state == nullptr ? 0 : state->accept_batches));
  o.Set("answered", Napi::Number::New(info.Env(), state == nullptr ? 0 : state->answered));
  o.Set("upgraded", Napi::Number::New(info.Env(), state == nullptr ? 0 : state->upgraded));
  o.Set("started", Napi::Number::New(info.Env(), state == nullptr ? 0 : state->started));
  o.Set("helloTerminated", Napi::Number::New(info.Env(), state == nullptr ? 0 : state->hello_terminated));
  o.Set("helloPeeked", Napi::Number::New(info.Env(), state == nullptr ? 0 : state->hello_peeked));
  return o;
}

// ioCommit(id): a peeking connection stops peeking: the bytes JS has seen leave the kernel's queue and reads go
// on from there, level-triggered, as on any read-mode connection. A no-op for the others.
Napi::Value Commit(const Napi::CallbackInfo& info) {
  State& s = Own(info.Env());
  int32_t id = IdArg(info, s);
  Conn& c = s.conns[id];
  if (!c.peeking) return info.Env().Undefined();
  PeekEnd(c, kDropSeen);
  Rearm(s, c);  // the mask loses EPOLLET: EPOLL_CTL_MOD reports bytes still queued past what was seen
  return info.Env().Undefined();
}

// ioRewind(id, consumed) -> whether a peeking connection stopped peeking with only its first `consumed` bytes taken
// off the kernel's queue (a PROXY header; 0 for none): what JS saw past them is read again by the connection's next
// reader (the addon's TLS reads the ClientHello JS peeked at). False (nothing changed) for a connection that is not
// peeking, has seen its FIN, or saw fewer than `consumed` bytes.
Napi::Value Rewind(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  State& s = Own(env);
  int32_t id = IdArg(info, s);
  if (info.Length() < 2 || !info[1].IsNumber()) throw Napi::TypeError::New(env, "ioRewind(id, consumed)");
  int64_t consumed = info[1].As<Napi::Number>().Int64Value();
  Conn& c = s.conns[id];
  if (!c.peeking || c.eof || c.dead || consumed < 0) return Napi::Boolean::New(env, false);
  if (consumed > 0) {  // a PROXY header: JS saw at least that much (a ClientHello alone drops nothing: no check)
    int seen = 0;
    socklen_t len = sizeof seen;
    if (getsockopt(c.fd, SOL_SOCKET, SO_PEEK_OFF, &seen, &len) != 0 || consumed > seen) return Napi::Boolean::New(env, false);
  }
  PeekEnd(c, consumed);
  Rearm(s, c);  // level-triggered from now on: bytes still queued are reported again
  return Napi::Boolean::New(env, true);
}

// ioPeeking(id) -> whether nothing of this connection was consumed yet (its whole stream is still queued).
Napi::Value Peeking(const Napi::CallbackInfo& info) {
  State& s = Own(info.Env());
  return Napi::Boolean::New(info.Env(), s.conns[IdArg(info, s)].peeking);
}

// ioPeekSupported() -> whether this kernel peeks TCP at an offset (SO_PEEK_OFF on TCP: Linux >= 6.10).
Napi::Value PeekSupported(const Napi::CallbackInfo& info) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Napi::Boolean::New(info.Env(), false);
  int zero = 0;
  bool ok = setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &zero, sizeof zero) == 0;
  close(fd);
  return Napi::Boolean::New(info.Env(), ok);
}

void Teardown(void* /*arg*/) {
  if (state == nullptr) return;
  for (Conn& c : state->conns)
    if (c.fd >= 0) close(c.fd);
  uv_poll_stop(&state->poll);
  // The poll handle's memory must outlive libuv's close callback; the process is ending, so it is left.
  close(state->epfd);
  state = nullptr;
}

}  // namespace

bool DetachTls(Napi::Env env, int32_t id, int* fd, tls::Session** session) {
  if (state == nullptr || state->env != static_cast<napi_env>(env)) return false;
  State& s = *state;
  if (id < 0 || static_cast<size_t>(id) >= s.conns.size()) return false;
  Conn& c = s.conns[id];
  if (c.fd < 0 || c.tls == nullptr || c.handshaking || c.dead || c.out.size() > c.out_off || c.shutdown_pending || c.tls_want_write) return false;
  Unregister(s, c);
  *fd = c.fd;
  *session = c.tls;
  c.tls = nullptr;  // FreeConn must not free what now belongs to the caller
  FreeConn(s, id);
  return true;
}

bool SuspendPlain(Napi::Env env, int32_t id, int* fd, bool* sole) {
  if (state == nullptr || state->env != static_cast<napi_env>(env)) return false;
  State& s = *state;
  if (id < 0 || static_cast<size_t>(id) >= s.conns.size()) return false;
  Conn& c = s.conns[id];
  // a peeking connection's bytes are still queued in the kernel: the relay would read them a second time
  if (c.fd < 0 || c.listener || c.tls != nullptr || c.connecting || c.dead || c.peeking || c.shutdown_pending || c.want_drain ||
      c.out.size() > c.out_off) {
    return false;
  }
  Unregister(s, c);
  if (c.mask != 0) return false;  // epoll refused the EPOLL_CTL_DEL: the connection stays as it was
  *fd = c.fd;
  *sole = c.sole_fd;
  return true;
}

void ResumePlain(Napi::Env env, int32_t id) {
  if (state == nullptr || state->env != static_cast<napi_env>(env)) return;
  Rearm(*state, state->conns[id]);
}

void ReleasePlain(Napi::Env env, int32_t id) {
  if (state == nullptr || state->env != static_cast<napi_env>(env)) return;
  FreeConn(*state, id);
}

void Register(Napi::Env env, Napi::Object exports) {
  nx::Register(env, exports);
  exports.Set("ioInit", Napi::Function::New(env, Init, "ioInit"));
  exports.Set("ioAdopt", Napi::Function::New(env, Adopt, "ioAdopt"));
  exports.Set("ioListen", Napi::Function::New(env, Listen, "ioListen"));
  exports.Set("ioListenMode", Napi::Function::New(env, ListenMode, "ioListenMode"));
  exports.Set("ioListenPassthrough", Napi::Function::New(env, ListenPassthrough, "ioListenPassthrough"));
  exports.Set("passthroughMatch", Napi::Function::New(env, PassthroughMatch, "passthroughMatch"));
  exports.Set("ioListenDefer", Napi::Function::New(env, ListenDefer, "ioListenDefer"));
  exports.Set("ioSynQueued", Napi::Function::New(env, SynQueuedOf, "ioSynQueued"));
  exports.Set("ioRelease", Napi::Function::New(env, Release, "ioRelease"));
  exports.Set("ioListenEnd", Napi::Function::New(env, ListenEnd, "ioListenEnd"));
  exports.Set("ioConnect", Napi::Function::New(env, Connect, "ioConnect"));
  exports.Set("ioConnectUnix", Napi::Function::New(env, ConnectUnix, "ioConnectUnix"));
  exports.Set("ioWrite", Napi::Function::New(env, Write, "ioWrite"));
  exports.Set("ioAnswerPlan", Napi::Function::New(env, AnswerPlan, "ioAnswerPlan"));
  exports.Set("ioAnswer", Napi::Function::New(env, Answer, "ioAnswer"));
  exports.Set("ioAnswerUpgrade", Napi::Function::New(env, AnswerUpgrade, "ioAnswerUpgrade"));
  exports.Set("ioAnswerUpgradeKey", Napi::Function::New(env, AnswerUpgradeKey, "ioAnswerUpgradeKey"));
  exports.Set("wsAccept", Napi::Function::New(env, WsAccept, "wsAccept"));
  exports.Set("ioAnswerOff", Napi::Function::New(env, AnswerOffJs, "ioAnswerOff"));
  exports.Set("ioFcgiAnswer", Napi::Function::New(env, FcgiAnswer, "ioFcgiAnswer"));
  exports.Set("fcgiAnswerFeed", Napi::Function::New(env, FcgiAnswerFeed, "fcgiAnswerFeed"));
  exports.Set("responseHeadRewrite", Napi::Function::New(env, ResponseHeadRewrite, "responseHeadRewrite"));
  exports.Set("requestHeadRewrite", Napi::Function::New(env, RequestHeadRewrite, "requestHeadRewrite"));
  exports.Set("routeTableCompile", Napi::Function::New(env, RouteTableCompile, "routeTableCompile"));
  exports.Set("routeTableMatch", Napi::Function::New(env, RouteTableMatch, "routeTableMatch"));
  exports.Set("routeTableLive", Napi::Function::New(env, RouteTableLive, "routeTableLive"));
  exports.Set("fcgiRequestRecords", Napi::Function::New(env, FcgiRequestRecords, "fcgiRequestRecords"));
  exports.Set("ioWriteLatin1", Napi::Function::New(env, WriteLatin1, "ioWriteLatin1"));
  exports.Set("ioRead", Napi::Function::New(env, Read, "ioRead"));
  exports.Set("ioShutdown", Napi::Function::New(env, Shutdown, "ioShutdown"));
  exports.Set("ioCloseNotify", Napi::Function::New(env, CloseNotify, "ioCloseNotify"));
  exports.Set("ioClose", Napi::Function::New(env, Close, "ioClose"));
  exports.Set("ioKeepAlive", Napi::Function::New(env, KeepAlive, "ioKeepAlive"));
  exports.Set("ioQueued", Napi::Function::New(env, Queued, "ioQueued"));
  exports.Set("ioSendFile", Napi::Function::New(env, SendFile, "ioSendFile"));
  exports.Set("ioFd", Napi::Function::New(env, Fd, "ioFd"));
  exports.Set("ioAddress", Napi::Function::New(env, Address, "ioAddress"));
  exports.Set("ioStats", Napi::Function::New(env, Stats, "ioStats"));
  exports.Set("ioAdoptTls", Napi::Function::New(env, AdoptTls, "ioAdoptTls"));
  exports.Set("ioStartTls", Napi::Function::New(env, StartTls, "ioStartTls"));
  exports.Set("ioTlsInfo", Napi::Function::New(env, TlsInfo, "ioTlsInfo"));
  exports.Set("ioTlsError", Napi::Function::New(env, TlsError, "ioTlsError"));
  exports.Set("ioCommit", Napi::Function::New(env, Commit, "ioCommit"));
  exports.Set("ioRewind", Napi::Function::New(env, Rewind, "ioRewind"));
  exports.Set("ioPeeking", Napi::Function::New(env, Peeking, "ioPeeking"));
  exports.Set("ioPeekSupported", Napi::Function::New(env, PeekSupported, "ioPeekSupported"));
  napi_add_env_cleanup_hook(env, Teardown, nullptr);
}

}  // namespace portico::io
