// The splice relay thread. Ownership rules: the JS thread builds a relay (sockets, counters) and registers it in
// the map and the epoll set; from then on only the relay thread touches its fds and frees it. The map (guarded
// by mu) is the only structure both threads read: lookups for stats and close requests go through it, and a
// relay leaves the map before it is freed, so a pointer found under the lock is valid while the lock is held.
// Pipes belong to the relay thread's pool, not to relays: a direction takes one when bytes are ready and gives
// it back empty, so an idle tunnel holds its two sockets only (HAProxy's pipe pool works the same way).
#include "relay.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace portico {

namespace {

// Bytes asked of one splice() into an empty pipe; the pipe's capacity caps what is actually moved.
constexpr size_t kChunk = 1 << 20;
// A larger pipe moves more per syscall; F_SETPIPE_SZ may be refused (per-user pipe limits): the default stays.
constexpr int kPipeSize = 256 * 1024;
// Rounds of read+write per direction before yielding to other relays (fairness under bulk traffic).
constexpr int kRoundsPerTurn = 16;
// At the pipe cap (or when pipe2 fails, e.g. EMFILE) a direction copies through a user-space buffer this big
// instead: slower, never refused. Allocated while it holds bytes, freed when they are out.
constexpr size_t kCopyChunk = 16 * 1024;
// Empty pipes kept for reuse; more are closed when given back (a burst does not hold fds forever).
constexpr size_t kMaxFreePipes = 64;
// How often idle deadlines are checked while some relay has one.
constexpr int kIdleSweepMs = 100;
constexpr int kMaxEvents = 256;

uint64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

// close() is never retried: on Linux the fd is released even when it reports EINTR.
void CloseFd(int& fd) {
  if (fd >= 0) close(fd);
  fd = -1;
}

struct Relay;

// What an epoll event points at: one socket of one relay.
struct Endpoint {
  Relay* relay;
  int side;  // 0 = client, 1 = upstream
};

// One direction: bytes read from socket `side` go through a pooled pipe (or the copy buffer) to the other socket.
struct Direction {
  int pipe_r = -1;          // a pipe from the pool while `held` > 0 (or during one read), else -1
  int pipe_w = -1;
  char* buf = nullptr;      // the copy buffer when no pipe could be had; only while `held` > 0
  size_t buf_off = 0;       // first byte of `buf` not yet written
  size_t held = 0;          // bytes read in and not yet out (in the pipe or in buf)
  bool eof = false;         // the source sent FIN
  bool shut = false;        // FIN forwarded (shutdown(SHUT_WR) on the destination)
  std::atomic<bool> blocked{false};
  std::atomic<uint64_t> bytes{0};
};

struct Relay {
  uint64_t id = 0;
  int fd[2] = {-1, -1};
  Direction dir[2];  // dir[0]: client -> upstream, dir[1]: upstream -> client
  Endpoint ep[2];
  uint32_t idle_ms = 0;
  uint64_t last_active = 0;
  int last_eof_side = 0;
  bool closed = false;
  bool queued = false;  // in the again-list
};

struct Command {
  uint64_t id;
  Reason reason;
};

// The relay thread's pipes. `free_pipes` is touched by the relay thread only; the counters are read by stats.
struct PipePool {
  std::vector<std::pair<int, int>> free_pipes;
  std::atomic<size_t> open{0};       // pipes that exist: in the free list or held by a direction
  std::atomic<size_t> in_use{0};     // held by a direction
  std::atomic<size_t> cap{1024};     // most pipes that may exist at once
  std::atomic<uint64_t> copies{0};   // reads that went through the copy buffer (cap reached or pipe2 failed)
  std::atomic<uint64_t> pipe_errors{0};  // pipe2 failures (EMFILE, ENFILE, ENOMEM)
};

struct State {
  std::mutex mu;
  std::unordered_map<uint64_t, Relay*> relays;  // guarded by mu
  std::vector<Command> commands;                // guarded by mu
  uint64_t next_id = 1;                         // guarded by mu
  size_t with_idle = 0;                         // guarded by mu
  bool started = false;                         // guarded by mu
  bool stopping = false;                        // guarded by mu
  int epfd = -1;
  int wakefd = -1;
  std::thread thread;
  EndSink sink = nullptr;
  PipePool pipes;
};

// Never destroyed: a joinable std::thread destroyed at exit() would call std::terminate.
State& g = *new State();

Reason ErrorOf(int side) { return side == 0 ? Reason::kClientError : Reason::kUpstreamError; }
Reason OrderlyOf(int side) { return side == 0 ? Reason::kClient : Reason::kUpstream; }

// Relay thread only. A pipe for one read: from the free list, else a new one below the cap. False when none
// (the caller copies through a buffer instead).
bool TakePipe(Direction* x) {
  PipePool& p = g.pipes;
  // A cap lowered at run time (reload) is met by closing free pipes first.
  while (!p.free_pipes.empty() && p.open.load(std::memory_order_relaxed) > p.cap.load(std::memory_order_relaxed)) {
    close(p.free_pipes.back().first);
    close(p.free_pipes.back().second);
    p.free_pipes.pop_back();
    p.open.fetch_sub(1, std::memory_order_relaxed);
  }
  if (!p.free_pipes.empty()) {
    std::pair<int, int> pipe = p.free_pipes.back();
    p.free_pipes.pop_back();
    x->pipe_r = pipe.first;
    x->pipe_w = pipe.second;
    p.in_use.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  if (p.open.load(std::memory_order_relaxed) >= p.cap.load(std::memory_order_relaxed)) return false;
  int fds[2];
  if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
    p.pipe_errors.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  fcntl(fds[1], F_SETPIPE_SZ, kPipeSize);  // best effort, see kPipeSize
  x->pipe_r = fds[0];
  x->pipe_w = fds[1];
  p.open.fetch_add(1, std::memory_order_relaxed);
  p.in_use.fetch_add(1, std::memory_order_relaxed);
  return true;
}

// Relay thread only. Gives an empty pipe back (kept for reuse, or closed beyond kMaxFreePipes or the cap); a pipe
// that may still hold bytes (`dirty`: the relay ended mid-transfer) is always closed.
void GivePipe(Direction* x, bool dirty) {
  if (x->pipe_r < 0) return;
  PipePool& p = g.pipes;
  p.in_use.fetch_sub(1, std::memory_order_relaxed);
  if (!dirty && p.free_pipes.size() < kMaxFreePipes && p.open.load(std::memory_order_relaxed) <= p.cap.load(std::memory_order_relaxed)) {
    p.free_pipes.emplace_back(x->pipe_r, x->pipe_w);
    x->pipe_r = -1;
    x->pipe_w = -1;
    return;
  }
  CloseFd(x->pipe_r);
  CloseFd(x->pipe_w);
  p.open.fetch_sub(1, std::memory_order_relaxed);
}

void FreeBuffer(Direction* x) {
  delete[] x->buf;
  x->buf = nullptr;
  x->buf_off = 0;
}

// JS thread, before the relay is registered: a relay owns no pipe yet, only its sockets.
void FreeRelay(Relay* r) {
  for (int s = 0; s < 2; s++) CloseFd(r->fd[s]);
  delete r;
}

// Relay thread only. Closes every fd, takes the relay out of the map, reports once. The memory is freed by the
// caller after the current batch of events (`graveyard`), since later events of the batch may still point here.
void Finish(Relay* r, Reason reason, int error, std::vector<Relay*>* graveyard, bool report) {
  if (r->closed) return;
  r->closed = true;
  for (int s = 0; s < 2; s++) {
    epoll_ctl(g.epfd, EPOLL_CTL_DEL, r->fd[s], nullptr);
    CloseFd(r->fd[s]);
    GivePipe(&r->dir[s], r->dir[s].held > 0);
    FreeBuffer(&r->dir[s]);
  }
  {
    std::lock_guard<std::mutex> lock(g.mu);
    g.relays.erase(r->id);
    if (r->idle_ms > 0) g.with_idle--;
  }
  if (report && g.sink != nullptr) {
    g.sink(RelayEnd{r->id, reason, r->dir[0].bytes.load(std::memory_order_relaxed),
                    r->dir[1].bytes.load(std::memory_order_relaxed), error});
  }
  graveyard->push_back(r);
}

int SocketError(int fd) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
  return err;
}

enum class Pumped { kWaiting, kMore, kClosed };

// Moves what it can in direction d until a syscall would block. Edge-triggered epoll wakes us only on a new
// edge, so every path ends either at EAGAIN, at EOF, or with kMore (the caller re-queues the relay). A pipe (or
// the copy buffer) is held only while it has bytes: it is taken for a read and given back once empty.
Pumped Pump(Relay* r, int d, std::vector<Relay*>* graveyard) {
  Direction& x = r->dir[d];
  const int src = r->fd[d];
  const int dst = r->fd[1 - d];
  for (int round = 0; round < kRoundsPerTurn; round++) {
    if (x.held > 0) {
      ssize_t n = x.pipe_r >= 0 ? splice(x.pipe_r, nullptr, dst, nullptr, x.held, SPLICE_F_MOVE | SPLICE_F_NONBLOCK)
                                : send(dst, x.buf + x.buf_off, x.held, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        x.held -= static_cast<size_t>(n);
        x.buf_off += static_cast<size_t>(n);
        x.blocked.store(false, std::memory_order_relaxed);
        if (x.held == 0) {
          GivePipe(&x, false);
          FreeBuffer(&x);
        }
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) {
        // The destination's send buffer is full: wait for EPOLLOUT on it. Nothing more is read meanwhile, and
        // the pipe stays with this direction until it is drained.
        x.blocked.store(true, std::memory_order_relaxed);
        return Pumped::kWaiting;
      }
      Finish(r, ErrorOf(1 - d), n < 0 ? errno : EPIPE, graveyard, true);
      return Pumped::kClosed;
    }
    if (x.eof) {
      if (!x.shut) {
        // Half-close: the source's FIN becomes a FIN to the destination once the pipe is empty.
        // ENOTCONN (the destination is already gone) is reported by its own direction, not here.
        shutdown(dst, SHUT_WR);
        x.shut = true;
      }
      if (r->dir[1 - d].shut) {
        Finish(r, OrderlyOf(r->last_eof_side), 0, graveyard, true);
        return Pumped::kClosed;
      }
      return Pumped::kWaiting;
    }
    // Nothing is held here, so EAGAIN can only mean "no data on the socket" (not "pipe full").
    ssize_t n;
    if (TakePipe(&x)) {
      n = splice(src, nullptr, x.pipe_w, nullptr, kChunk, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n <= 0) GivePipe(&x, false);  // nothing went in: the pipe is still empty
    } else {
      g.pipes.copies.fetch_add(1, std::memory_order_relaxed);
      x.buf = new char[kCopyChunk];
      x.buf_off = 0;
      n = recv(src, x.buf, kCopyChunk, MSG_DONTWAIT);
      if (n <= 0) FreeBuffer(&x);
    }
    if (n > 0) {
      x.held = static_cast<size_t>(n);
      // counted when read, like the JS relay, so a peer that received a byte always sees it counted
      x.bytes.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
      r->last_active = NowMs();
      continue;
    }
    if (n == 0) {
      x.eof = true;
      r->last_eof_side = d;
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return Pumped::kWaiting;
    Finish(r, ErrorOf(d), errno, graveyard, true);
    return Pumped::kClosed;
  }
  return Pumped::kMore;
}

// Returns true when the relay wants another turn without a new epoll edge.
bool PumpBoth(Relay* r, std::vector<Relay*>* graveyard) {
  bool more = false;
  for (int d = 0; d < 2; d++) {
    if (r->closed) return false;
    Pumped p = Pump(r, d, graveyard);
    if (p == Pumped::kClosed) return false;
    if (p == Pumped::kMore) more = true;
  }
  return more;
}

void RunCommands(std::vector<Relay*>* graveyard) {
  uint64_t ignored;
  while (read(g.wakefd, &ignored, sizeof ignored) < 0 && errno == EINTR) {
  }
  std::vector<std::pair<Relay*, Reason>> todo;
  {
    std::lock_guard<std::mutex> lock(g.mu);
    for (const Command& c : g.commands) {
      auto it = g.relays.find(c.id);
      if (it != g.relays.end()) todo.emplace_back(it->second, c.reason);
    }
    g.commands.clear();
  }
  for (auto& [relay, reason] : todo) Finish(relay, reason, 0, graveyard, true);
}

void SweepIdle(uint64_t now, std::vector<Relay*>* graveyard) {
  std::vector<Relay*> expired;
  {
    std::lock_guard<std::mutex> lock(g.mu);
    for (auto& [id, r] : g.relays) {
      if (r->idle_ms > 0 && now - r->last_active >= r->idle_ms) expired.push_back(r);
    }
  }
  for (Relay* r : expired) Finish(r, Reason::kIdleTimeout, 0, graveyard, true);
}

void Loop() {
  epoll_event events[kMaxEvents];
  std::vector<Relay*> graveyard;
  std::vector<Relay*> again;
  std::vector<Relay*> next;
  uint64_t last_sweep = NowMs();
  for (;;) {
    int timeout = -1;
    {
      std::lock_guard<std::mutex> lock(g.mu);
      if (g.stopping) break;
      if (g.with_idle > 0) timeout = kIdleSweepMs;
    }
    if (!again.empty()) timeout = 0;
    int n = epoll_wait(g.epfd, events, kMaxEvents, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;  // EBADF/EINVAL: the engine is being torn down
    }
    for (int i = 0; i < n; i++) {
      if (events[i].data.ptr == nullptr) {
        RunCommands(&graveyard);
        continue;
      }
      Endpoint* ep = static_cast<Endpoint*>(events[i].data.ptr);
      Relay* r = ep->relay;
      if (r->closed) continue;
      if (events[i].events & EPOLLERR) {
        int err = SocketError(r->fd[ep->side]);
        if (err != 0) {
          Finish(r, ErrorOf(ep->side), err, &graveyard, true);
          continue;
        }
      }
      // Pump only what this edge concerns: news from side s (data, FIN, hang-up) feeds direction s; room on
      // side s drains direction 1-s if it has bytes waiting. Pumping both on every event would add a splice
      // that finds the idle side empty, per message.
      const int side = ep->side;
      const uint32_t evs = events[i].events;
      bool more = false;
      if (evs & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        Pumped p = Pump(r, side, &graveyard);
        if (p == Pumped::kClosed) continue;
        more = p == Pumped::kMore;
      }
      Direction& back = r->dir[1 - side];
      if ((evs & (EPOLLOUT | EPOLLHUP | EPOLLERR)) && !r->closed && (back.held > 0 || (back.eof && !back.shut))) {
        Pumped p = Pump(r, 1 - side, &graveyard);
        if (p == Pumped::kClosed) continue;
        more = more || p == Pumped::kMore;
      }
      if (more && !r->queued) {
        r->queued = true;
        again.push_back(r);
      }
    }
    // Relays that used their turn with work left go again, after everyone else had a turn.
    next.clear();
    for (Relay* r : again) {
      r->queued = false;
      if (r->closed) continue;
      if (PumpBoth(r, &graveyard) && !r->queued) {
        r->queued = true;
        next.push_back(r);
      }
    }
    again.swap(next);
    uint64_t now = NowMs();
    if (now - last_sweep >= kIdleSweepMs) {
      last_sweep = now;
      SweepIdle(now, &graveyard);
    }
    for (Relay* r : graveyard) delete r;
    graveyard.clear();
  }
  // Teardown: close every relay silently (the JS side is going away).
  std::vector<Relay*> all;
  {
    std::lock_guard<std::mutex> lock(g.mu);
    for (auto& [id, r] : g.relays) all.push_back(r);
  }
  for (Relay* r : all) Finish(r, Reason::kShutdown, 0, &graveyard, false);
  for (Relay* r : graveyard) delete r;
  for (auto& [pr, pw] : g.pipes.free_pipes) {
    close(pr);
    close(pw);
  }
  g.pipes.free_pipes.clear();
}

// Called with g.mu held.
bool EnsureStartedLocked(std::string* error) {
  if (g.started) return true;
  if (g.stopping) {
    *error = "the splice relay was stopped";
    return false;
  }
  g.epfd = epoll_create1(EPOLL_CLOEXEC);
  if (g.epfd < 0) {
    *error = std::string("epoll_create1: ") + strerror(errno);
    return false;
  }
  g.wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (g.wakefd < 0) {
    *error = std::string("eventfd: ") + strerror(errno);
    CloseFd(g.epfd);
    return false;
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;  // the wake-up fd is the only event without an Endpoint
  if (epoll_ctl(g.epfd, EPOLL_CTL_ADD, g.wakefd, &ev) != 0) {
    *error = std::string("epoll_ctl(eventfd): ") + strerror(errno);
    CloseFd(g.wakefd);
    CloseFd(g.epfd);
    return false;
  }
  try {
    g.thread = std::thread(Loop);
  } catch (const std::exception& e) {
    *error = std::string("cannot start the relay thread: ") + e.what();
    CloseFd(g.wakefd);
    CloseFd(g.epfd);
    return false;
  }
  g.started = true;
  return true;
}

void Wake() {
  uint64_t one = 1;
  while (write(g.wakefd, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

}  // namespace

const char* ReasonName(Reason reason) {
  switch (reason) {
    case Reason::kClient: return "client";
    case Reason::kUpstream: return "upstream";
    case Reason::kClientError: return "client_error";
    case Reason::kUpstreamError: return "upstream_error";
    case Reason::kIdleTimeout: return "idle_timeout";
    case Reason::kLifetime: return "lifetime";
    case Reason::kShutdown: return "shutdown";
  }
  return "shutdown";
}

bool ParseReason(const std::string& name, Reason* out) {
  for (Reason r : {Reason::kClient, Reason::kUpstream, Reason::kClientError, Reason::kUpstreamError,
                   Reason::kIdleTimeout, Reason::kLifetime, Reason::kShutdown}) {
    if (name == ReasonName(r)) {
      *out = r;
      return true;
    }
  }
  return false;
}

uint64_t RelayEngine::Start(int client_fd, int upstream_fd, uint32_t idle_ms, std::string* error) {
  Relay* r = new Relay();
  r->fd[0] = client_fd;
  r->fd[1] = upstream_fd;
  r->idle_ms = idle_ms;
  r->last_active = NowMs();
  for (int s = 0; s < 2; s++) {
    r->ep[s] = Endpoint{r, s};
    // dup()ed fds share the file status flags with libuv's copy, which is already non-blocking; make sure.
    int flags = fcntl(r->fd[s], F_GETFL);
    if (flags < 0 || fcntl(r->fd[s], F_SETFL, flags | O_NONBLOCK) != 0) {
      *error = std::string("fcntl(O_NONBLOCK): ") + strerror(errno);
      FreeRelay(r);
      return 0;
    }
  }
  std::unique_lock<std::mutex> lock(g.mu);
  g.sink = sink_;
  if (!EnsureStartedLocked(error)) {
    lock.unlock();
    FreeRelay(r);
    return 0;
  }
  r->id = g.next_id++;
  g.relays.emplace(r->id, r);
  if (idle_ms > 0) g.with_idle++;
  // Registered while holding the lock: the relay thread cannot finish (erase) it before both fds are in.
  for (int s = 0; s < 2; s++) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = &r->ep[s];
    if (epoll_ctl(g.epfd, EPOLL_CTL_ADD, r->fd[s], &ev) != 0) {
      *error = std::string("epoll_ctl: ") + strerror(errno);
      epoll_ctl(g.epfd, EPOLL_CTL_DEL, r->fd[0], nullptr);
      g.relays.erase(r->id);
      if (idle_ms > 0) g.with_idle--;
      lock.unlock();
      FreeRelay(r);
      return 0;
    }
  }
  return r->id;
}

bool RelayEngine::RequestClose(uint64_t id, Reason reason) {
  {
    std::lock_guard<std::mutex> lock(g.mu);
    if (!g.started || g.relays.find(id) == g.relays.end()) return false;
    g.commands.push_back(Command{id, reason});
  }
  Wake();
  return true;
}

bool RelayEngine::Stats(uint64_t id, RelayStats* out) {
  std::lock_guard<std::mutex> lock(g.mu);
  auto it = g.relays.find(id);
  if (it == g.relays.end()) return false;
  Relay* r = it->second;
  out->bytes_up = r->dir[0].bytes.load(std::memory_order_relaxed);
  out->bytes_down = r->dir[1].bytes.load(std::memory_order_relaxed);
  out->up_blocked = r->dir[0].blocked.load(std::memory_order_relaxed);
  out->down_blocked = r->dir[1].blocked.load(std::memory_order_relaxed);
  return true;
}

void RelayEngine::SetPipeCap(size_t cap) { g.pipes.cap.store(cap, std::memory_order_relaxed); }

PipeStats RelayEngine::Pipes() {
  PipePool& p = g.pipes;
  return PipeStats{p.open.load(std::memory_order_relaxed), p.in_use.load(std::memory_order_relaxed),
                   p.cap.load(std::memory_order_relaxed), p.copies.load(std::memory_order_relaxed),
                   p.pipe_errors.load(std::memory_order_relaxed)};
}

size_t RelayEngine::Active() {
  std::lock_guard<std::mutex> lock(g.mu);
  return g.relays.size();
}

void RelayEngine::Stop() {
  {
    std::lock_guard<std::mutex> lock(g.mu);
    if (g.stopping) return;
    g.stopping = true;
    if (!g.started) return;
  }
  Wake();
  if (g.thread.joinable()) g.thread.join();
  CloseFd(g.wakefd);
  CloseFd(g.epfd);
}

}  // namespace portico
