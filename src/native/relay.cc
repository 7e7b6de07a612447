// The splice relay thread. Ownership rules: the JS thread builds a relay (sockets, counters) and registers it in
// the map and the epoll set; from then on only the relay thread touches its fds and frees it. The map (guarded
// by mu) is the only structure both threads read: lookups for stats and close requests go through it, and a
// relay leaves the map before it is freed, so a pointer found under the lock is valid while the lock is held.
// Raw tunnels read with recv into one user-space buffer and send at once while their reads are small: a short
// connection (a request, a reply, two FINs) never takes a pipe. The first read that fills the buffer marks the
// direction bulk, and it splices from then on (HAProxy splices past a threshold too).
// Pipes belong to the relay thread's pool, not to relays: a direction takes one when bytes are ready and gives
// it back empty, so an idle tunnel holds its two sockets only (HAProxy's pipe pool works the same way).
// WebSocket tunnels (PumpFramed) follow frame headers: small reads pass through one user-space buffer (recv, the
// headers read as they pass, send), and only the rest of a big frame, whose length is known, is spliced. At
// shutdown that lets the relay stop each direction at a frame boundary and write a Close 1001 there.
#include "relay.h"

#include "frames.h"
#include "half-open.h"
#include "loop-thread.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <mutex>
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
// How often idle deadlines (and keep-alives due) are checked while some relay has one.
constexpr int kIdleSweepMs = 100;
// StartOptions::upstream_keepalive_s is armed this long after the start.
constexpr uint64_t kKeepAliveAfterMs = 1000;
constexpr int kMaxEvents = 256;
// WebSocket tunnels: the rest of a frame at least this big is spliced; anything smaller (and every header) is
// read through the relay thread's buffer, kScratch at a time. HAProxy likewise splices large transfers only.
constexpr uint64_t kSpliceMin = 64 * 1024;
constexpr size_t kScratch = 64 * 1024;
// Going away: how long a frame in progress may take to end, then how long the peers get to close their side
// after the Close frames (the JS relay's GOING_AWAY_WAIT_MS and GOING_AWAY_LINGER_MS; the worker's drain
// overrun is 2 s).
constexpr uint64_t kGoingAwayWaitMs = 500;
constexpr uint64_t kGoingAwayLingerMs = 1000;
constexpr int kLeavingSweepMs = 20;
// What a relay's sockets wait for from registration on. EPOLLOUT is not among them: a fresh socket is writable,
// so asking for it at EPOLL_CTL_ADD would wake this thread once per socket of every new tunnel for nothing (two
// context switches per WebSocket handshake); it is added to a socket's mask once a write to it found it full.
// EPOLLPRI: an event then says when TCP urgent data waits, which a read stops short of (see Source).
constexpr uint32_t kReadEvents = EPOLLIN | EPOLLRDHUP | EPOLLPRI | EPOLLET;
// An edge with none of these is quiet (see Source): the socket holds bytes at most, no FIN, no error, no urgent mark.
constexpr uint32_t kLoudEvents = EPOLLRDHUP | EPOLLHUP | EPOLLERR | EPOLLPRI;

uint64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
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
  // WebSocket relays only (Relay::framed):
  FrameTracker frames;      // the frame headers of the bytes read from the source so far
  bool stopped = false;     // going away: at a boundary (or framing lost), nothing more is read
  uint8_t tail[8] = {};     // going away: the Close frame, written once `held` is out
  uint8_t tail_len = 0;
  uint8_t tail_off = 0;
  bool fin_after = false;   // lingering: FIN the destination once `held` and `tail` are out
  // RequestPause (raw relays): nothing more is read from the source; bytes already held still go out. A hang-up
  // or error of the source is still read, so a vanished peer is not kept forever.
  bool paused = false;
  // Raw relays: a read filled the scratch buffer, so this direction carries bulk and splices from now on.
  bool bulk = false;
  std::atomic<bool> blocked{false};
  std::atomic<uint64_t> bytes{0};
  // A relay freed before its first event (Start failed) may still hold StartOptions::upstream_first.
  ~Direction() { delete[] buf; }
};

struct Relay {
  uint64_t id = 0;
  int fd[2] = {-1, -1};
  Direction dir[2];  // dir[0]: client -> upstream, dir[1]: upstream -> client
  Endpoint ep[2];
  uint32_t idle_ms = 0;
  uint32_t lifetime_ms = 0;  // StartOptions::lifetime_ms
  uint32_t half_closed_ms = 0;  // StartOptions::half_closed_ms
  size_t half_at = kNotHalfOpen;  // its place in g.half_open (half-open.h), relay thread only
  uint64_t started_ms = 0;
  int keepalive_s = 0;  // StartOptions::upstream_keepalive_s
  bool keepalive_client = false;  // StartOptions::client_keepalive
  uint64_t last_active = 0;
  int last_eof_side = 0;
  bool closed = false;
  bool sole_owner = false;  // StartOptions::sole_owner: close() alone leaves the epoll set
  bool half_close = true;   // StartOptions::half_close (raw relays)
  // Where Start() is (loop-thread.h: kRegistering, kRegistered, kGivenUp). An event can reach the relay thread
  // between the two EPOLL_CTL_ADDs; the relay thread waits for the registration to end before it acts
  // (AwaitRegistered: a write's AskRoom or a close would race the second ADD).
  std::atomic<uint8_t> registration{kRegistering};
  bool room_asked[2] = {false, false};  // EPOLLOUT is in fd[s]'s epoll mask (AskRoom)
  bool queued = false;  // in the again-list
  bool framed = false;       // a WebSocket tunnel: PumpFramed, with frame trackers
  bool going_away = false;   // RequestGoingAway: each direction runs to a frame boundary, then stops
  bool lingering = false;    // the Close frames are queued: FIN after them, read and drop until both FINs
  uint64_t deadline = 0;     // going away: when the boundaries are given up; lingering: when the relay closes
};

// Whether the sweep (every kIdleSweepMs) checks this relay among all of them: idle or lifetime (a half-closed bound
// is swept from g.half_open, which holds only those relays).
bool Swept(const Relay& r) { return r.idle_ms > 0 || r.lifetime_ms > 0; }

struct Command {
  uint64_t id;
  Reason reason;
  bool going_away;
  // RequestPause: -1 not a pause command; else the direction (0 up, 1 down) and its new state
  int8_t pause_dir = -1;
  bool pause = false;
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
  size_t swept = 0;                             // relays with an idle or lifetime bound (Swept), guarded by mu
  std::deque<std::pair<uint64_t, uint64_t>> keepalive;  // guarded by mu: (when, relay id), in start order
  bool started = false;                         // guarded by mu
  bool stopping = false;                        // guarded by mu
  LoopThread loop;  // its epoll set, wake-up fd and thread
  EndSink sink = nullptr;
  BeforeWait before_wait = nullptr;
  PipePool pipes;
  std::vector<Relay*> leaving;  // relay thread only: relays going away (their deadlines are swept)
  HalfOpen<Relay> half_open;  // relay thread only: half-closed relays with a half_closed_ms bound (swept for it)
  // Guarded by mu: relays whose registration failed after one fd was in the epoll set. An event of theirs may
  // already be in the relay thread's batch, so that thread frees them, before its next epoll_wait.
  std::vector<Relay*> unborn;
  char scratch[kScratch];       // relay thread only: the user-space buffer of WebSocket relays
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

// JS thread, before the relay is registered: a relay owns no pipe yet, only its sockets (closed unless `keep`:
// they are the caller's again).
void FreeRelay(Relay* r, bool keep = false) {
  if (!keep) {
    for (int s = 0; s < 2; s++) CloseFd(r->fd[s]);
  }
  delete r;
}

// Relay thread only. A write to fd[s] found it full: from now on epoll reports room on it (edge triggered, once per
// new room). Asked once per socket and kept: a socket that filled up once is likely to again (bulk), and
// EPOLL_CTL_MOD reports room that came meanwhile, so no edge is lost between the EAGAIN and this call. False
// when epoll refused (ENOMEM): the caller ends the relay, which could otherwise wait forever.
bool AskRoom(Relay* r, int s) {
  if (r->room_asked[s]) return true;
  epoll_event ev{};
  ev.events = kReadEvents | EPOLLOUT;
  ev.data.ptr = &r->ep[s];
  if (epoll_ctl(g.loop.epfd, EPOLL_CTL_MOD, r->fd[s], &ev) != 0) return false;
  r->room_asked[s] = true;
  return true;
}

// Relay thread only. Closes every fd, takes the relay out of the map, reports once. The memory is freed by the
// caller after the current batch of events (`graveyard`), since later events of the batch may still point here.
void Finish(Relay* r, Reason reason, int error, std::vector<Relay*>* graveyard, bool report) {
  if (r->closed) return;
  r->closed = true;
  g.half_open.Leave(r);
  if (r->going_away) {
    g.leaving.erase(std::remove(g.leaving.begin(), g.leaving.end(), r), g.leaving.end());
    // once the Close frames are out, a peer that resets instead of closing is still the shutdown's doing
    if (r->lingering) reason = Reason::kShutdown;
  }
  for (int s = 0; s < 2; s++) {
    if (!r->sole_owner) epoll_ctl(g.loop.epfd, EPOLL_CTL_DEL, r->fd[s], nullptr);  // a dup elsewhere keeps it in
    CloseFd(r->fd[s]);
    GivePipe(&r->dir[s], r->dir[s].held > 0);
    FreeBuffer(&r->dir[s]);
  }
  {
    std::lock_guard<std::mutex> lock(g.mu);
    g.relays.erase(r->id);
    if (Swept(*r)) g.swept--;
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

// LastFin: when a direction's source ends and the other direction is already over (its source ended, its FIN
// went out), the relay closes both sockets at once. The destination's own source sent FIN and was read to the
// end, so close(2) sends a FIN after whatever the kernel still has to send, as shutdown(SHUT_WR) would: that
// shutdown is left out (one syscall per tunnel).
enum class Pumped { kWaiting, kMore, kClosed };
enum class Step { kNext, kWaiting, kClosed };

// Writes what direction d holds (in its pipe or its buffer) to the destination, once. A pipe (or buffer) is
// given back as soon as it is empty.
Step WriteHeld(Relay* r, int d, std::vector<Relay*>* graveyard) {
  Direction& x = r->dir[d];
  const int dst = r->fd[1 - d];
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
    return Step::kNext;
  }
  if (n < 0 && errno == EINTR) return Step::kNext;
  if (n < 0 && errno == EAGAIN) {
    // The destination's send buffer is full: wait for EPOLLOUT on it. Nothing more is read meanwhile, and
    // the pipe stays with this direction until it is drained.
    x.blocked.store(true, std::memory_order_relaxed);
    if (AskRoom(r, 1 - d)) return Step::kWaiting;
    Finish(r, ErrorOf(1 - d), errno, graveyard, true);
    return Step::kClosed;
  }
  Finish(r, ErrorOf(1 - d), n < 0 ? errno : EPIPE, graveyard, true);
  return Step::kClosed;
}

// What the epoll event that started a turn of a direction said of its source socket (see Source).
enum class Edge : uint8_t {
  kNone,   // no edge of this socket started the turn (the again-list, a destination's room)
  kQuiet,  // none of kLoudEvents: bytes at most
  kEnded,  // EPOLLRDHUP (the FIN is in), no error, no urgent mark
  kLoud,   // anything else (error, urgent data)
};

Edge EdgeOf(uint32_t events) {
  if ((events & kLoudEvents) == 0) return Edge::kQuiet;
  if ((events & EPOLLRDHUP) && !(events & (EPOLLERR | EPOLLPRI))) return Edge::kEnded;
  return Edge::kLoud;
}

// The source socket of one turn of one direction: every read of a pump goes through it. It holds two rules that
// spare a turn its last recv, the one that would only say EAGAIN or 0. TCP stops a copied recv short of what it
// asked for only when its receive queue is empty, at a FIN (tcp_recvmsg takes the FIN with the bytes before it and
// returns them) or at an urgent mark (EPOLLPRI).
// - Quiet edge (no hang-up, error or urgent data: kLoudEvents): a short read has emptied the socket, since a FIN
//   that came before the event would have set EPOLLRDHUP in it and whatever arrives after it raises a new edge.
//   The turn's next read says EAGAIN without a syscall.
// - Ended edge (EPOLLRDHUP without EPOLLERR or EPOLLPRI): the FIN was in order when the event was collected, so
//   every byte before it was queued already and nothing can come after it; a short read has read up to the FIN.
//   The turn's next read says 0 (end of stream) without a syscall: a reply that comes with its FIN costs one recv.
// Never from a spliced read (a read short of the pipe's room says nothing of the socket), and never on a turn no
// edge of this socket started (the again-list, a destination's room): a FIN whose edge was spent while the
// direction waited for room would be missed.
class Source {
 public:
  Source(int fd, Edge edge) : fd_(fd), edge_(edge) {}
  // Nothing to read until a new edge.
  bool Empty() const { return empty_; }
  // recv into user memory, at most `want` bytes; -1 with EAGAIN once Empty(), 0 once the FIN was read.
  ssize_t Copy(char* into, size_t want) {
    if (empty_) {
      errno = EAGAIN;
      return -1;
    }
    if (at_fin_) return 0;
    ssize_t n = recv(fd_, into, want, MSG_DONTWAIT);
    if (n > 0 && static_cast<size_t>(n) < want) {
      if (edge_ == Edge::kQuiet) empty_ = true;
      if (edge_ == Edge::kEnded) at_fin_ = true;
    }
    return n;
  }
  // splice into a pipe, at most `want` bytes; -1 with EAGAIN once Empty(), 0 once the FIN was read.
  ssize_t Splice(int pipe_w, size_t want) {
    if (empty_) {
      errno = EAGAIN;
      return -1;
    }
    if (at_fin_) return 0;
    return splice(fd_, nullptr, pipe_w, nullptr, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
  }

 private:
  int fd_;
  Edge edge_;
  bool empty_ = false;
  bool at_fin_ = false;  // a copied read of an ended edge came back short: the FIN is read
};

Pumped PumpFramed(Relay* r, int d, std::vector<Relay*>* graveyard, Source& source);
bool SendScratch(Relay* r, int d, size_t n, std::vector<Relay*>* graveyard);

// Moves what it can in direction d until a syscall would block. Edge-triggered epoll wakes us only on a new
// edge, so every path ends either at EAGAIN, at EOF, or with kMore (the caller re-queues the relay). A pipe (or
// the copy buffer) is held only while it has bytes: it is taken for a read and given back once empty.
// `edge`: what the epoll event of direction d's source that started this turn said (see Source).
Pumped Pump(Relay* r, int d, std::vector<Relay*>* graveyard, Edge edge = Edge::kNone) {
  Source source(r->fd[d], edge);
  if (r->framed) return PumpFramed(r, d, graveyard, source);
  Direction& x = r->dir[d];
  const int dst = r->fd[1 - d];
  for (int round = 0; round < kRoundsPerTurn; round++) {
    if (x.held > 0) {
      Step s = WriteHeld(r, d, graveyard);
      if (s == Step::kNext) continue;
      return s == Step::kWaiting ? Pumped::kWaiting : Pumped::kClosed;
    }
    if (x.eof) {
      if (!r->half_close) {
        // No half-close: the first FIN read ends the relay once its source's bytes are out (nothing is held
        // here). close(2) sends the destination a FIN after them; bytes the closing side had not read from the
        // other peer are dropped with a reset, as nginx `stream` does.
        Finish(r, OrderlyOf(d), 0, graveyard, true);
        return Pumped::kClosed;
      }
      const bool last = r->dir[1 - d].shut;
      // Half-close: the source's FIN becomes a FIN to the destination once the pipe is empty. ENOTCONN (the
      // destination is already gone) is reported by its own direction, not here. The last FIN is the close's own
      // (LastFin).
      if (!x.shut && !last) shutdown(dst, SHUT_WR);
      x.shut = true;
      if (last) {
        Finish(r, OrderlyOf(r->last_eof_side), 0, graveyard, true);
        return Pumped::kClosed;
      }
      g.half_open.Enter(r, NowMs());  // one FIN passed on, the other direction runs on
      return Pumped::kWaiting;
    }
    if (x.paused || source.Empty()) return Pumped::kWaiting;
    // Nothing is held here, so EAGAIN can only mean "no data on the socket" (not "pipe full").
    ssize_t n;
    if (!x.bulk) {
      // Small reads: recv into the thread's buffer and send at once (what the destination does not take waits in
      // a buffer of the direction's own). A read that fills the buffer makes the direction bulk: splice from then.
      n = source.Copy(g.scratch, kScratch);
      if (n > 0) {
        x.bytes.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
        r->last_active = NowMs();
        if (static_cast<size_t>(n) == kScratch) x.bulk = true;
        if (!SendScratch(r, d, static_cast<size_t>(n), graveyard)) return Pumped::kClosed;
        continue;
      }
    } else if (TakePipe(&x)) {
      n = source.Splice(x.pipe_w, kChunk);
      if (n <= 0) GivePipe(&x, false);  // nothing went in: the pipe is still empty
    } else {
      g.pipes.copies.fetch_add(1, std::memory_order_relaxed);
      x.buf = new char[kCopyChunk];
      x.buf_off = 0;
      n = source.Copy(x.buf, kCopyChunk);
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

// Going away: both directions have reached a frame boundary (or their framing is lost, or their source ended).
bool GoingAwayReady(const Relay* r) {
  if (!r->going_away || r->lingering) return false;
  for (const Direction& x : r->dir) {
    if (!x.stopped && !x.eof) return false;
  }
  return true;
}

// The Close frames (status 1001, going away: RFC 6455 §7.4.1) go where a boundary was reached and the source
// neither sent a Close nor ended: masked with a fresh key to the upstream (§5.3), unmasked to the client. Then
// every direction FINs once its bytes are out, and the relay reads and drops until both peers closed.
void SayGoingAway(Relay* r) {
  for (int d = 0; d < 2; d++) {
    Direction& x = r->dir[d];
    if (x.frames.AtBoundary() && !x.frames.CloseSeen() && !x.eof) {
      x.tail[0] = 0x88;  // FIN, opcode 8 (Close)
      if (d == 0) {
        uint8_t mask[4];
        if (getrandom(mask, sizeof mask, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof mask)) {
          const uint64_t t = NowMs() * 2654435761u;  // never blocks; a Close frame carries no secret
          memcpy(mask, &t, sizeof mask);
        }
        x.tail[1] = 0x80 | 2;
        memcpy(x.tail + 2, mask, sizeof mask);
        x.tail[6] = 0x03 ^ mask[0];
        x.tail[7] = 0xe9 ^ mask[1];
        x.tail_len = 8;
      } else {
        x.tail[1] = 2;
        x.tail[2] = 0x03;
        x.tail[3] = 0xe9;
        x.tail_len = 4;
      }
    }
    x.fin_after = true;
  }
  r->lingering = true;
  r->deadline = NowMs() + kGoingAwayLingerMs;
}

// A WebSocket relay reads into g.scratch and writes at once; what the destination does not take now is kept in
// a buffer of the direction's own (allocated only then). False when the relay was closed.
bool SendScratch(Relay* r, int d, size_t n, std::vector<Relay*>* graveyard) {
  Direction& x = r->dir[d];
  ssize_t sent;
  do sent = send(r->fd[1 - d], g.scratch, n, MSG_NOSIGNAL | MSG_DONTWAIT);
  while (sent < 0 && errno == EINTR);
  if (sent < 0 && errno != EAGAIN) {
    Finish(r, ErrorOf(1 - d), errno, graveyard, true);
    return false;
  }
  const size_t done = sent < 0 ? 0 : static_cast<size_t>(sent);
  if (done < n) {
    x.buf = new char[n - done];
    memcpy(x.buf, g.scratch + done, n - done);
    x.buf_off = 0;
    x.held = n - done;
  }
  return true;
}

// Direction d's source ended its TCP connection: whether the relay ends at once (frames.h EndsAtOnce, the rule of
// every relay) instead of passing the FIN on and waiting for the other peer's (a second wake-up per tunnel). Never
// during a shutdown (going away: its Close frames and linger decide).
bool EndsAtOnce(const Relay* r, int d) {
  const Direction& other = r->dir[1 - d];
  return !r->going_away && portico::EndsAtOnce(r->dir[d].frames, other.frames, other.held == 0);
}

// Direction d of a WebSocket relay: as Pump, with every byte read followed by the frame tracker. Headers and
// small frames pass through g.scratch (recv, then send at once); the rest of a frame of kSpliceMin or more is
// spliced, exactly its length, so bulk keeps the zero-copy path. A direction whose framing is lost is relayed
// as raw bytes. Going away, a direction reads only to the end of the frame in progress, then stops; lingering,
// it writes its Close frame after what it holds, FINs, and drops what its source still sends until its FIN.
Pumped PumpFramed(Relay* r, int d, std::vector<Relay*>* graveyard, Source& source) {
  Direction& x = r->dir[d];
  const int dst = r->fd[1 - d];
  for (int round = 0; round < kRoundsPerTurn; round++) {
    if (x.held > 0) {
      Step s = WriteHeld(r, d, graveyard);
      if (s == Step::kNext) continue;
      return s == Step::kWaiting ? Pumped::kWaiting : Pumped::kClosed;
    }
    if (x.tail_off < x.tail_len) {
      ssize_t n = send(dst, x.tail + x.tail_off, x.tail_len - x.tail_off, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        x.tail_off += static_cast<uint8_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN && AskRoom(r, 1 - d)) return Pumped::kWaiting;
      Finish(r, ErrorOf(1 - d), n < 0 ? errno : EPIPE, graveyard, true);
      return Pumped::kClosed;
    }
    if (x.eof) {
      if (EndsAtOnce(r, d)) {
        // what the source sent is out (held and tail come first): close(2) FINs the destination after it
        Finish(r, OrderlyOf(d), 0, graveyard, true);
        return Pumped::kClosed;
      }
      // lingering, a direction can be shut (fin_after) before its source ended: the relay ends when both did
      const Direction& other = r->dir[1 - d];
      const bool last = other.shut && other.eof;
      // the last FIN is the close's own (LastFin)
      if (!x.shut && !last) shutdown(dst, SHUT_WR);
      x.shut = true;
      if (last) {
        Finish(r, OrderlyOf(r->last_eof_side), 0, graveyard, true);
        return Pumped::kClosed;
      }
      // lingering (going away) has its own deadline
      if (!r->lingering) g.half_open.Enter(r, NowMs());
      if (GoingAwayReady(r)) {
        SayGoingAway(r);
        return Pumped::kMore;
      }
      return Pumped::kWaiting;
    }
    size_t want = kScratch;
    if (r->lingering) {
      if (x.fin_after && !x.shut) {
        shutdown(dst, SHUT_WR);
        x.shut = true;
      }
      // read and drop: a byte left unread would turn close() into a reset that can lose the Close at the peer
      ssize_t n = source.Copy(g.scratch, kScratch);
      if (n > 0) continue;
      if (n == 0) {
        x.eof = true;
        continue;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return Pumped::kWaiting;
      Finish(r, ErrorOf(d), errno, graveyard, true);
      return Pumped::kClosed;
    }
    if (r->going_away) {
      if (x.stopped) return Pumped::kWaiting;
      const uint64_t left = x.frames.ToBoundary();
      if (left == 0) {
        // at a boundary (or the framing is lost): what comes next is past the Close, it stays unread
        x.stopped = true;
        if (GoingAwayReady(r)) {
          SayGoingAway(r);
          return Pumped::kMore;
        }
        return Pumped::kWaiting;
      }
      want = static_cast<size_t>(std::min<uint64_t>(want, left));
    }
    // after the going-away checks above: a read that just ended a frame must still stop the direction there
    if (source.Empty()) return Pumped::kWaiting;
    const bool broken = x.frames.Broken();
    const uint64_t payload = x.frames.PayloadLeft();
    const bool big = broken || payload >= kSpliceMin;
    bool copied = false;
    ssize_t n;
    if (big && TakePipe(&x)) {
      const size_t len = broken ? kChunk : static_cast<size_t>(std::min<uint64_t>(payload, kChunk));
      n = source.Splice(x.pipe_w, len);
      if (n <= 0) GivePipe(&x, false);  // nothing went in: the pipe is still empty
      if (n > 0) {
        x.held = static_cast<size_t>(n);
        x.frames.SkipPayload(static_cast<uint64_t>(n));
      }
    } else {
      if (big) g.pipes.copies.fetch_add(1, std::memory_order_relaxed);
      n = source.Copy(g.scratch, big ? std::min(want, kCopyChunk) : want);
      if (n > 0) {
        x.frames.Feed(reinterpret_cast<const uint8_t*>(g.scratch), static_cast<size_t>(n));
        copied = true;
      }
    }
    if (n > 0) {
      // counted when read, like the JS relay, so a peer that received a byte always sees it counted
      x.bytes.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
      r->last_active = NowMs();
      if (copied && !SendScratch(r, d, static_cast<size_t>(n), graveyard)) return Pumped::kClosed;
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

// Bytes or a FIN wait for room at the destination of direction x.
bool WantsOut(const Direction& x) {
  return x.held > 0 || (x.eof && !x.shut) || x.tail_off < x.tail_len || (x.fin_after && !x.shut);
}

void Queue(Relay* r, std::vector<Relay*>* again) {
  if (r->queued || r->closed) return;
  r->queued = true;
  again->push_back(r);
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

// Going away starts: a raw relay, or one whose framing is lost either way, is closed at once (the peers see
// 1006); a WebSocket relay runs each direction to a frame boundary (PumpFramed) within kGoingAwayWaitMs.
void StartGoingAway(Relay* r, std::vector<Relay*>* graveyard, std::vector<Relay*>* again) {
  if (r->closed || r->going_away) return;
  if (!r->framed || r->dir[0].frames.Broken() || r->dir[1].frames.Broken()) {
    Finish(r, Reason::kShutdown, 0, graveyard, true);
    return;
  }
  r->going_away = true;
  r->deadline = NowMs() + kGoingAwayWaitMs;
  g.leaving.push_back(r);
  Queue(r, again);
}

void RunCommands(std::vector<Relay*>* graveyard, std::vector<Relay*>* again) {
  g.loop.TakeWake();
  std::vector<Command> todo;
  std::vector<Relay*> relays;
  {
    std::lock_guard<std::mutex> lock(g.mu);
    for (const Command& c : g.commands) {
      auto it = g.relays.find(c.id);
      if (it == g.relays.end()) continue;
      todo.push_back(c);
      relays.push_back(it->second);
    }
    g.commands.clear();
  }
  for (size_t i = 0; i < todo.size(); i++) {
    if (todo[i].pause_dir >= 0) {
      Relay* r = relays[i];
      r->dir[todo[i].pause_dir].paused = todo[i].pause;
      // edge triggered: bytes that arrived while paused raise no new edge, so a resumed relay pumps now
      if (!todo[i].pause) Queue(r, again);
      continue;
    }
    if (todo[i].going_away) StartGoingAway(relays[i], graveyard, again);
    else Finish(relays[i], todo[i].reason, 0, graveyard, true);
  }
}

// Relays going away past their deadline: directions not at a boundary by then get no Close frame (their peer
// sees 1006), the others do; lingering ones are closed.
void SweepLeaving(uint64_t now, std::vector<Relay*>* graveyard, std::vector<Relay*>* again) {
  std::vector<Relay*> due;
  for (Relay* r : g.leaving) {
    if (now >= r->deadline) due.push_back(r);
  }
  for (Relay* r : due) {
    if (r->closed) continue;
    if (r->lingering) {
      Finish(r, Reason::kShutdown, 0, graveyard, true);
    } else {
      SayGoingAway(r);
      Queue(r, again);
    }
  }
}

// Relay thread only: keep-alives due (StartOptions::upstream_keepalive_s, client_keepalive). Only this thread
// closes a relay's fds, so an fd found under the lock is still the relay's after it.
void ArmKeepAlives(uint64_t now) {
  std::vector<std::pair<int, int>> due;  // (fd, idle seconds)
  {
    std::lock_guard<std::mutex> lock(g.mu);
    while (!g.keepalive.empty() && g.keepalive.front().first <= now) {
      auto it = g.relays.find(g.keepalive.front().second);
      if (it != g.relays.end() && !it->second->closed) {
        const Relay* r = it->second;
        due.emplace_back(r->fd[1], r->keepalive_s);
        if (r->keepalive_client) due.emplace_back(r->fd[0], r->keepalive_s);
      }
      g.keepalive.pop_front();
    }
  }
  for (auto [fd, idle] : due) SetKeepAlive(fd, idle);
}

void SweepIdle(uint64_t now, std::vector<Relay*>* graveyard) {
  std::vector<std::pair<Relay*, Reason>> expired;
  {
    std::lock_guard<std::mutex> lock(g.mu);
    // every relay is looked at only when some have an idle or lifetime bound (none by default)
    if (g.swept > 0) for (auto& [id, r] : g.relays) {
      if (r->lifetime_ms > 0 && now - r->started_ms >= r->lifetime_ms) expired.emplace_back(r, Reason::kLifetime);
      else if (r->idle_ms > 0 && now - r->last_active >= r->idle_ms) expired.emplace_back(r, Reason::kIdleTimeout);
    }
  }
  // (a relay expired twice is finished once: Finish returns for a closed one)
  g.half_open.Expired(now, Reason::kHalfClosedTimeout, &expired);
  for (auto [r, reason] : expired) Finish(r, reason, 0, graveyard, true);
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
      for (Relay* r : g.unborn) delete r;
      g.unborn.clear();
      if (g.stopping) break;
      if (g.swept > 0 || !g.keepalive.empty()) timeout = kIdleSweepMs;
    }
    if (!g.half_open.Empty()) timeout = kIdleSweepMs;
    if (!g.leaving.empty()) timeout = kLeavingSweepMs;
    if (!again.empty()) timeout = 0;
    if (g.before_wait != nullptr) {
      int limit = g.before_wait();
      if (limit >= 0 && (timeout < 0 || limit < timeout)) timeout = limit;
    }
    int n = epoll_wait(g.loop.epfd, events, kMaxEvents, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;  // EBADF/EINVAL: the engine is being torn down
    }
    for (int i = 0; i < n; i++) {
      if (events[i].data.ptr == nullptr) {
        RunCommands(&graveyard, &again);
        continue;
      }
      Endpoint* ep = static_cast<Endpoint*>(events[i].data.ptr);
      Relay* r = ep->relay;
      // a relay whose registration is in progress (loop-thread.h): Start() adds the client's fd last, so the usual
      // early event (the client's FIN right behind its handshake) mostly finds nothing to wait for
      AwaitRegistered(r->registration, g.mu);
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
        // a paused source that hung up is read anyway (its FIN or error ends the relay as usual)
        if (r->dir[side].paused && (evs & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))) r->dir[side].paused = false;
        Pumped p = Pump(r, side, &graveyard, EdgeOf(evs));
        if (p == Pumped::kClosed) continue;
        more = p == Pumped::kMore;
      }
      Direction& back = r->dir[1 - side];
      if ((evs & (EPOLLOUT | EPOLLHUP | EPOLLERR)) && !r->closed && WantsOut(back)) {
        Pumped p = Pump(r, 1 - side, &graveyard);
        if (p == Pumped::kClosed) continue;
        more = more || p == Pumped::kMore;
      }
      if (more) Queue(r, &again);
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
      ArmKeepAlives(now);
    }
    if (!g.leaving.empty()) SweepLeaving(now, &graveyard, &again);
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
  epoll_data_t wake{};
  wake.ptr = nullptr;  // the wake-up fd is the only event without an Endpoint
  if (!g.loop.Start(Loop, wake, "splice relay", error)) return false;
  g.started = true;
  return true;
}

void Wake() { g.loop.Wake(); }

}  // namespace

void SetKeepAlive(int fd, int idle_s) {
  const int one = 1;
  const int interval = 1;
  const int count = 10;
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle_s, sizeof idle_s);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
}

const char* ReasonName(Reason reason) {
  switch (reason) {
    case Reason::kClient: return "client";
    case Reason::kUpstream: return "upstream";
    case Reason::kClientError: return "client_error";
    case Reason::kUpstreamError: return "upstream_error";
    case Reason::kIdleTimeout: return "idle_timeout";
    case Reason::kLifetime: return "lifetime";
    case Reason::kShutdown: return "shutdown";
    case Reason::kHalfClosedTimeout: return "half_closed_timeout";
  }
  return "shutdown";
}

bool ParseReason(const std::string& name, Reason* out) {
  for (Reason r : {Reason::kClient, Reason::kUpstream, Reason::kClientError, Reason::kUpstreamError,
                   Reason::kIdleTimeout, Reason::kLifetime, Reason::kShutdown, Reason::kHalfClosedTimeout}) {
    if (name == ReasonName(r)) {
      *out = r;
      return true;
    }
  }
  return false;
}

uint64_t RelayEngine::Start(int client_fd, int upstream_fd, uint32_t idle_ms, const WebSocketStart* websocket, std::string* error,
                            StartOptions options) {
  Relay* r = new Relay();
  r->fd[0] = client_fd;
  r->fd[1] = upstream_fd;
  r->idle_ms = idle_ms;
  r->lifetime_ms = options.lifetime_ms;
  r->half_closed_ms = options.half_closed_ms;
  r->sole_owner = options.sole_owner;
  r->half_close = options.half_close || websocket != nullptr;  // a WebSocket tunnel keeps its own close rules
  r->last_active = NowMs();
  r->started_ms = r->last_active;
  if (!options.upstream_first.empty()) {
    Direction& up = r->dir[0];
    up.buf = new char[options.upstream_first.size()];
    memcpy(up.buf, options.upstream_first.data(), options.upstream_first.size());
    up.held = options.upstream_first.size();
    r->room_asked[1] = true;  // registered with EPOLLOUT below: the first event writes them
  }
  if (websocket != nullptr) {
    r->framed = true;
    r->dir[0].frames = FrameTracker(true);  // client to server: masked
    r->dir[1].frames = FrameTracker(false);
    r->dir[0].frames.Feed(reinterpret_cast<const uint8_t*>(websocket->up.data()), websocket->up.size());
    r->dir[1].frames.Feed(reinterpret_cast<const uint8_t*>(websocket->down.data()), websocket->down.size());
  }
  for (int s = 0; s < 2; s++) {
    r->ep[s] = Endpoint{r, s};
    if (options.nonblocking) continue;
    // dup()ed fds share the file status flags with libuv's copy, which is already non-blocking; make sure.
    int flags = fcntl(r->fd[s], F_GETFL);
    if (flags < 0 || ((flags & O_NONBLOCK) == 0 && fcntl(r->fd[s], F_SETFL, flags | O_NONBLOCK) != 0)) {
      *error = std::string("fcntl(O_NONBLOCK): ") + strerror(errno);
      FreeRelay(r, options.keep_on_failure);
      return 0;
    }
  }
  std::unique_lock<std::mutex> lock(g.mu);
  g.sink = sink_;
  g.before_wait = before_wait_;
  if (!EnsureStartedLocked(error)) {
    lock.unlock();
    FreeRelay(r, options.keep_on_failure);
    return 0;
  }
  r->id = g.next_id++;
  g.relays.emplace(r->id, r);
  if (Swept(*r)) g.swept++;
  // Registered while holding the lock: the relay thread cannot finish (erase) it before both fds are in.
  // EPOLL_CTL_ADD reports what is already there to read (edge triggered included): bytes or a FIN that came
  // before the hand-over are not missed. The upstream's fd first (see AwaitRegistered).
  for (int s : {1, 0}) {
    epoll_event ev{};
    ev.events = r->room_asked[s] ? kReadEvents | EPOLLOUT : kReadEvents;
    ev.data.ptr = &r->ep[s];
    if (epoll_ctl(g.loop.epfd, EPOLL_CTL_ADD, r->fd[s], &ev) != 0) {
      *error = std::string("epoll_ctl: ") + strerror(errno);
      g.relays.erase(r->id);
      if (Swept(*r)) g.swept--;
      if (s == 1) {
        lock.unlock();
        FreeRelay(r, options.keep_on_failure);
        return 0;
      }
      // fd[1] was in the set: an event of it may be in the relay thread's hands, which frees the relay
      epoll_ctl(g.loop.epfd, EPOLL_CTL_DEL, r->fd[1], nullptr);
      r->closed = true;
      if (!options.keep_on_failure) {
        for (int k = 0; k < 2; k++) CloseFd(r->fd[k]);
      }
      g.unborn.push_back(r);
      r->registration.store(kGivenUp, std::memory_order_release);
      return 0;
    }
  }
  if (options.upstream_keepalive_s > 0) {
    r->keepalive_s = options.upstream_keepalive_s;
    r->keepalive_client = options.client_keepalive;
    g.keepalive.emplace_back(NowMs() + kKeepAliveAfterMs, r->id);
  }
  r->registration.store(kRegistered, std::memory_order_release);
  return r->id;
}

bool RelayEngine::RequestClose(uint64_t id, Reason reason) {
  {
    std::lock_guard<std::mutex> lock(g.mu);
    if (!g.started || g.relays.find(id) == g.relays.end()) return false;
    g.commands.push_back(Command{id, reason, false});
  }
  Wake();
  return true;
}

bool RelayEngine::RequestGoingAway(uint64_t id) {
  {
    std::lock_guard<std::mutex> lock(g.mu);
    if (!g.started || g.relays.find(id) == g.relays.end()) return false;
    g.commands.push_back(Command{id, Reason::kShutdown, true});
  }
  Wake();
  return true;
}

bool RelayEngine::RequestPause(uint64_t id, int direction, bool paused) {
  {
    std::lock_guard<std::mutex> lock(g.mu);
    if (!g.started || g.relays.find(id) == g.relays.end()) return false;
    Command c{id, Reason::kShutdown, false};
    c.pause_dir = static_cast<int8_t>(direction == 0 ? 0 : 1);
    c.pause = paused;
    g.commands.push_back(c);
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
  g.loop.Join();
}

}  // namespace portico
