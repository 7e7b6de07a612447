// The TLS tunnel relay thread. Ownership as in relay.cc: the JS thread builds a relay (the client's tls::Session
// and fd taken from io.cc, a dup of the backend's fd) and registers it in the map and the epoll set under the
// lock; from then on only this thread touches its session and fds and frees it. A direction holds a 64 KiB
// buffer only while bytes are in flight, and OpenSSL releases its record buffers on idle (RELEASE_BUFFERS), so
// an idle tunnel costs its two sockets and its session. Ends go to JS through an EndBridge of this file's own
// (end-bridge.h; the splice relay keeps its own, so neither depends on the other's ids).
#include "tls-relay.h"

#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include <openssl/ssl.h>

#include "end-bridge.h"
#include "frames.h"
#include "half-open.h"
#include "io.h"
#include "loop-thread.h"
#include "napi-args.h"
#include "relay.h"
#include "tls.h"

namespace portico::tls_relay {
namespace {

using tls::Io;

// What a direction holds while bytes are in flight: four TLS records' plaintext. Bulk moves in one recv() and one
// send() per 64 KiB on the plain leg, and (with OpenSSL's read buffer as large, kReadAhead) one recv() per four
// records on the TLS leg, instead of one of each per 16 KiB record; small messages still take one read each.
constexpr size_t kBuf = 64 * 1024;
// OpenSSL's read buffer under read-ahead: kBuf of records and their headers, tags and padding (16 KiB records).
constexpr size_t kReadAhead = kBuf + 4 * (SSL3_RT_HEADER_LENGTH + SSL3_RT_MAX_ENCRYPTED_OVERHEAD);
constexpr int kRoundsPerTurn = 16;  // reads per direction before other relays get a turn
constexpr int kIdleSweepMs = 100;
constexpr int kMaxEvents = 256;

uint64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

struct Relay;

// At shutdown, how long a frame in progress may take to end, then how long the peers get to close (relay.ts).
constexpr uint64_t kGoingAwayWaitMs = 500;
constexpr uint64_t kGoingAwayLingerMs = 1000;

struct Endpoint {
  Relay* relay;
  int side;  // 0 = client (TLS), 1 = upstream (plain)
};

// Bytes read from one side and not yet written to the other.
struct Held {
  char* data = nullptr;
  size_t off = 0;
  size_t len = 0;  // bytes from data + off
  bool eof = false;   // the source ended (close_notify or FIN)
  bool shut = false;  // the end was passed on (FIN to the backend; close_notify + FIN to the client)
  bool stopped = false;  // going away: this direction reached a frame boundary and reads no more
  // tlsRelayPause (the client direction of a raw relay): nothing more is read from the source; bytes already
  // held still go out, and a hang-up of the source is still seen (the Loop unpauses on it)
  bool paused = false;
  bool failed = false;  // the source failed after the bytes held were read: they go out, then the relay ends
  FrameTracker frames;  // the frame headers of what the source sent (Start sets the direction's masking)
  std::atomic<bool> blocked{false};
  std::atomic<uint64_t> bytes{0};
  void Free() {
    delete[] data;
    data = nullptr;
    off = len = 0;
  }
};

struct Relay {
  uint64_t id = 0;
  int fd[2] = {-1, -1};
  tls::Session* tls = nullptr;
  Held up;    // client -> upstream (plaintext from SSL_read)
  Held down;  // upstream -> client (plaintext for SSL_write)
  Endpoint ep[2];
  uint32_t idle_ms = 0;
  uint32_t half_closed_ms = 0;  // tunnel.half_closed_timeout (relay.h StartOptions::half_closed_ms)
  size_t half_at = kNotHalfOpen;  // its place in g.half_open (half-open.h), relay thread only
  uint64_t last_active = 0;
  int last_eof_side = 0;
  // The bytes are WebSocket frames (a tunnel after a 101): followed, so that shutdown can send Close frames. A raw
  // relay (terminate's hop into uWebSockets.js, whose first bytes are uWS's HTTP 101) follows nothing and is
  // cut at shutdown: the uWS session there closes with its own Close frames.
  bool websocket = false;
  int first_eof_side = -1;
  bool closed = false;
  bool queued = false;
  // Readiness per fd (0 client, 1 upstream), as epoll's edges left it: set by an edge, cleared when a call would
  // block. Every pump passes by both directions; these keep it from a syscall that would only say EAGAIN (a
  // 32-byte message otherwise costs as many failed reads and recvs as useful ones).
  bool rd[2] = {true, true};
  bool wr[2] = {true, true};
  // The peer hung up (an edge said RDHUP/HUP/ERR): a short recv no longer means the socket is drained.
  bool hup[2] = {false, false};
  // TCP urgent data came (an edge said PRI) and the socket has not said EAGAIN since: a recv stops short at the
  // urgent mark with bytes behind it, for which no new edge comes, so a short recv does not mean drained either.
  bool urgent[2] = {false, false};
  // OpenSSL's cross waits: a read that must write first (a TLS 1.3 KeyUpdate answer), a write that must read.
  bool read_wants_write = false;
  bool write_wants_read = false;
  // Shutdown of a WebSocket tunnel: Close 1001 each way at a frame boundary, then the peers get to close.
  bool going_away = false;
  bool lingering = false;
  uint64_t deadline = 0;
  // Where Start() is (loop-thread.h: kRegistering, kRegistered, kGivenUp). An event of the first fd can reach the
  // relay thread before the second is in the set, and its turn can end the relay (a client that reset, or dropped
  // its WebSocket right behind the 101): the relay thread waits for the registration to end first.
  std::atomic<uint8_t> registration{kRegistering};
};

struct Command {
  uint64_t id;
  Reason reason;
  bool going_away;  // shutdown(): Close frames first, not a cut
  // tlsRelayPause: -1 not a pause command; else the client direction's new state (0 read, 1 paused)
  int8_t pause = -1;
};

struct State {
  std::mutex mu;
  std::unordered_map<uint64_t, Relay*> relays;  // guarded by mu
  std::vector<Command> commands;                // guarded by mu
  uint64_t next_id = 1;                         // guarded by mu
  size_t with_idle = 0;                         // guarded by mu
  size_t going_away = 0;                        // guarded by mu: relays with a shutdown deadline
  bool started = false;                         // guarded by mu
  bool stopping = false;                        // guarded by mu
  // Guarded by mu: relays whose registration failed after one fd was in the epoll set. An event of theirs may
  // already be in the relay thread's batch, so that thread frees them, before its next epoll_wait.
  std::vector<Relay*> unborn;
  HalfOpen<Relay> half_open;  // relay thread only: half-closed relays with a half_closed_ms bound (swept for it)
  LoopThread loop;  // its epoll set, wake-up fd and thread
};

// Never destroyed (a joinable std::thread destroyed at exit() would terminate the process).
State& g = *new State();

// The ends on their way to JS (end-bridge.h: held until the loop's next turn).
EndBridge* bridge = nullptr;


// What a relay holds besides its memory: the session, both fds, the held bytes. Idempotent.
void Release(Relay* r) {
  delete r->tls;
  r->tls = nullptr;
  for (int s = 0; s < 2; s++) CloseFd(r->fd[s]);
  r->up.Free();
  r->down.Free();
}

void FreeRelay(Relay* r) {
  Release(r);
  delete r;
}

// Relay thread only. Frees the session, closes both fds, reports once; memory goes after the batch (graveyard).
void Finish(Relay* r, Reason reason, int error, std::vector<Relay*>* graveyard, bool report) {
  if (r->closed) return;
  r->closed = true;
  g.half_open.Leave(r);
  for (int s = 0; s < 2; s++) epoll_ctl(g.loop.epfd, EPOLL_CTL_DEL, r->fd[s], nullptr);
  Release(r);
  {
    std::lock_guard<std::mutex> lock(g.mu);
    g.relays.erase(r->id);
    if (r->idle_ms > 0) g.with_idle--;
    if (r->going_away) g.going_away--;
  }
  if (report && bridge != nullptr) {
    bridge->Hold(RelayEnd{r->id, reason, r->up.bytes.load(std::memory_order_relaxed), r->down.bytes.load(std::memory_order_relaxed), error});
  }
  graveyard->push_back(r);
}

enum class Pumped { kWaiting, kMore, kClosed };

int ErrnoOf(const tls::Session* s) { return s->sys_errno() != 0 ? s->sys_errno() : EPROTO; }

// Both ends passed on: the tunnel is done, named after the side that ended last. One only: half-closed (swept for
// tunnel.half_closed_timeout, unless a shutdown under way bounds it).
bool BothShut(Relay* r, std::vector<Relay*>* graveyard) {
  if (r->lingering) return false;
  if (!(r->up.shut && r->down.shut)) {
    if (!r->going_away) g.half_open.Enter(r, NowMs());
    return false;
  }
  // the backend ending first closed the tunnel (the JS relay's name for it); else the side that ended last
  int side = r->first_eof_side == 1 ? 1 : r->last_eof_side;
  Finish(r, side == 0 ? Reason::kClient : Reason::kUpstream, 0, graveyard, true);
  return true;
}

void Ended(Relay* r, int side) {
  r->last_eof_side = side;
  if (r->first_eof_side < 0) r->first_eof_side = side;
}

// The source of `h` ended its connection (FIN or close_notify): whether the relay ends at once (frames.h
// EndsAtOnce, the rule of every relay; `other` is the opposite direction). A raw relay and a shutdown under way keep
// half-close.
bool EndsAtOnce(const Relay* r, const Held& h, const Held& other) {
  return r->websocket && !r->going_away && portico::EndsAtOnce(h.frames, other.frames, other.len == 0);
}

// Follows the frames of `got` fresh bytes in h.data; going away, keeps only those up to the end of the frame in
// progress and stops the direction there. Returns the bytes to pass on.
size_t Track(Relay* r, Held& h, size_t at, size_t got) {
  if (!r->websocket) return got;
  const unsigned char* p = reinterpret_cast<const unsigned char*>(h.data + at);
  if (!r->going_away) {
    h.frames.Feed(p, got);
    return got;
  }
  // only up to the end of the frame in progress (a header first to learn its length)
  size_t keep = 0;
  for (uint64_t left; keep < got && (left = h.frames.ToBoundary()) > 0;) {
    const size_t take = static_cast<size_t>(std::min<uint64_t>(left, got - keep));
    h.frames.Feed(p + keep, take);
    keep += take;
  }
  if (h.frames.AtBoundary() || h.frames.Broken()) h.stopped = true;
  return keep;
}

// Appends bytes behind what the direction still holds (a Close frame at shutdown).
void Append(Held& h, const unsigned char* p, size_t n) {
  char* data = new char[h.len + n];
  if (h.len > 0) std::memcpy(data, h.data + h.off, h.len);
  std::memcpy(data + h.len, p, n);
  delete[] h.data;
  h.data = data;
  h.off = 0;
  h.len += n;
}

// Going away: once both directions stopped at a frame boundary (or the wait is over), a Close 1001 goes each way
// that has not carried one (masked to the backend, RFC 6455 §5.3), then both ends close and the peers get
// kGoingAwayLingerMs to close theirs. A direction still inside a frame at the deadline gets no Close (1006).
void MaybeSayGoingAway(Relay* r, uint64_t now) {
  if (!r->going_away || r->lingering) return;
  bool ready = (r->up.stopped || r->up.eof) && (r->down.stopped || r->down.eof);
  if (!ready && now < r->deadline) return;
  if (r->down.frames.AtBoundary() && !r->down.frames.CloseSeen() && !r->down.eof) {
    static const unsigned char kClose[] = {0x88, 0x02, 0x03, 0xe9};
    Append(r->down, kClose, sizeof kClose);
  }
  if (r->up.frames.AtBoundary() && !r->up.frames.CloseSeen() && !r->up.eof) {
    unsigned char mask[4] = {0x5a, 0x1c, 0xe7, 0x93};
    if (getrandom(mask, sizeof mask, GRND_NONBLOCK) != sizeof mask) mask[0] ^= static_cast<unsigned char>(NowMs());
    const unsigned char frame[] = {0x88, 0x82, mask[0], mask[1], mask[2], mask[3], static_cast<unsigned char>(0x03 ^ mask[0]), static_cast<unsigned char>(0xe9 ^ mask[1])};
    Append(r->up, frame, sizeof frame);
  }
  r->up.eof = r->down.eof = true;
  r->up.stopped = r->down.stopped = true;
  r->lingering = true;
  r->deadline = now + kGoingAwayLingerMs;
}

// Lingering: what the peers still send is read and dropped until both ended (so no unread byte turns the
// close into a reset that loses the Close frame at the peer); true when both have.
bool Drained(Relay* r) {
  static char sink[kBuf];
  bool client_done = false;
  for (;;) {
    size_t got = 0;
    Io io = r->tls->Read(sink, sizeof sink, &got);
    if (io == Io::kOk) continue;
    client_done = io == Io::kEof || io == Io::kError;
    break;
  }
  bool upstream_done = false;
  for (;;) {
    ssize_t n = recv(r->fd[1], sink, sizeof sink, MSG_DONTWAIT);
    if (n > 0) continue;
    if (n < 0 && errno == EINTR) continue;
    upstream_done = n == 0 || errno != EAGAIN;
    break;
  }
  return client_done && upstream_done;
}

// client (TLS) -> upstream: SSL_read into the held buffer, send() it on.
Pumped PumpUp(Relay* r, std::vector<Relay*>* graveyard) {
  Held& h = r->up;
  for (int round = 0; round < kRoundsPerTurn; round++) {
    if (h.len > 0) {
      if (!r->wr[1]) {
        h.blocked.store(true, std::memory_order_relaxed);
        return Pumped::kWaiting;
      }
      ssize_t n = send(r->fd[1], h.data + h.off, h.len, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        h.off += static_cast<size_t>(n);
        h.len -= static_cast<size_t>(n);
        h.blocked.store(false, std::memory_order_relaxed);
        if (h.len == 0) h.Free();
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) {
        r->wr[1] = false;
        h.blocked.store(true, std::memory_order_relaxed);  // backpressure: nothing more is decrypted meanwhile
        return Pumped::kWaiting;
      }
      Finish(r, Reason::kUpstreamError, n < 0 ? errno : EPIPE, graveyard, true);
      return Pumped::kClosed;
    }
    if (h.eof) {
      if (EndsAtOnce(r, h, r->down)) {
        // the client dropped the WebSocket, or ended after the closing handshake: its bytes are out; close_notify if
        // it can leave now, then both closed
        r->tls->Shutdown();
        Finish(r, Reason::kClient, 0, graveyard, true);
        return Pumped::kClosed;
      }
      if (!h.shut) {
        shutdown(r->fd[1], SHUT_WR);  // the client's close_notify (or FIN) becomes the backend's FIN
        h.shut = true;
      }
      return BothShut(r, graveyard) ? Pumped::kClosed : Pumped::kWaiting;
    }
    if (h.failed) {
      Finish(r, Reason::kClientError, ErrnoOf(r->tls), graveyard, true);
      return Pumped::kClosed;
    }
    if (h.stopped || h.paused) return Pumped::kWaiting;
    // nothing new on the client's socket and nothing buffered in OpenSSL (read-ahead): SSL_read would only block
    if (!r->rd[0] && !(r->read_wants_write && r->wr[0]) && SSL_has_pending(r->tls->ssl()) == 0) return Pumped::kWaiting;
    if (h.data == nullptr) h.data = new char[kBuf];
    // SSL_read gives one record at most: records already in OpenSSL's buffer (one recv() of read-ahead took them)
    // are taken too, so that they leave in one send(); the socket is not read again for them
    size_t filled = 0;
    Io io;
    for (;;) {
      size_t got = 0;
      io = r->tls->Read(h.data + filled, kBuf - filled, &got);
      r->read_wants_write = io == Io::kWantWrite;
      if (io == Io::kWantRead) r->rd[0] = r->urgent[0] = false;
      if (io == Io::kWantWrite) r->wr[0] = false;
      if (io != Io::kOk) break;
      filled += Track(r, h, filled, got);
      if (filled == kBuf || h.stopped || SSL_has_pending(r->tls->ssl()) == 0) break;
    }
    if (io == Io::kOk && !r->hup[0] && !r->urgent[0] && r->tls->Drained()) {
      // the last recv() came back shorter than asked and OpenSSL holds nothing: the socket is drained (as PumpDown's
      // short read), and edge-triggered epoll reports whatever comes after. Without this the next round's SSL_read
      // would make a recv() only to learn EAGAIN: one syscall in five of a WSS echo
      r->rd[0] = false;
    }
    if (filled > 0) {
      // what was read before an end or an error goes out first
      if (io == Io::kEof) {
        h.eof = true;
        Ended(r, 0);
      }
      h.failed = io == Io::kError;
      h.off = 0;
      h.len = filled;
      h.bytes.fetch_add(filled, std::memory_order_relaxed);
      r->last_active = NowMs();
      continue;
    }
    if (io == Io::kOk) {
      h.Free();  // a record of no plaintext (or nothing kept at a frame boundary while going away)
      continue;
    }
    h.Free();
    if (io == Io::kWantRead || io == Io::kWantWrite) return Pumped::kWaiting;  // both wake us on the client's edges
    if (io == Io::kEof) {
      h.eof = true;
      Ended(r, 0);
      continue;
    }
    Finish(r, Reason::kClientError, ErrnoOf(r->tls), graveyard, true);
    return Pumped::kClosed;
  }
  return Pumped::kMore;
}

// upstream (plain) -> client: recv() into the held buffer, SSL_write it on.
Pumped PumpDown(Relay* r, std::vector<Relay*>* graveyard) {
  Held& h = r->down;
  for (int round = 0; round < kRoundsPerTurn; round++) {
    if (h.len > 0) {
      if (!r->wr[0] && !(r->write_wants_read && r->rd[0])) {
        h.blocked.store(true, std::memory_order_relaxed);
        return Pumped::kWaiting;
      }
      size_t wrote = 0;
      Io io = r->tls->Write(h.data + h.off, h.len, &wrote);
      h.off += wrote;
      h.len -= wrote;
      // Write returns kOk with bytes left when the socket filled up after some progress: it waits like kWantWrite
      r->write_wants_read = io == Io::kWantRead || (io == Io::kOk && h.len > 0);
      if (io == Io::kWantWrite || (io == Io::kOk && h.len > 0)) r->wr[0] = false;
      if (io == Io::kWantRead) r->rd[0] = false;
      if (io == Io::kOk && h.len == 0) {
        h.Free();
        h.blocked.store(false, std::memory_order_relaxed);
        continue;
      }
      if (io == Io::kOk || io == Io::kWantWrite || io == Io::kWantRead) {
        // the client's socket is full: the same bytes go again on its next edge (OpenSSL's retry rule)
        h.blocked.store(true, std::memory_order_relaxed);
        return Pumped::kWaiting;
      }
      Finish(r, Reason::kClientError, ErrnoOf(r->tls), graveyard, true);
      return Pumped::kClosed;
    }
    if (h.eof) {
      if (!h.shut) {
        // close_notify, then FIN: the client's TLS stack sees a clean end of the backend's half
        if (r->tls->Shutdown() == Io::kWantWrite) {
          r->wr[0] = false;
          return Pumped::kWaiting;
        }
        if (EndsAtOnce(r, h, r->up)) {
          // the backend dropped the WebSocket, or ended after the closing handshake: close(2) sends the FIN after the
          // close_notify
          Finish(r, Reason::kUpstream, 0, graveyard, true);
          return Pumped::kClosed;
        }
        shutdown(r->fd[0], SHUT_WR);
        h.shut = true;
      }
      return BothShut(r, graveyard) ? Pumped::kClosed : Pumped::kWaiting;
    }
    if (h.stopped) return Pumped::kWaiting;
    if (!r->rd[1]) return Pumped::kWaiting;
    if (h.data == nullptr) h.data = new char[kBuf];
    ssize_t n = recv(r->fd[1], h.data, kBuf, MSG_DONTWAIT);
    if (n > 0) {
      // Edge triggered: a read shorter than asked drained the socket, and whatever arrives next (bytes, FIN)
      // raises a new edge; only a FIN that came with this edge must still be read (hup)
      if (static_cast<size_t>(n) < kBuf && !r->hup[1] && !r->urgent[1]) r->rd[1] = false;
      h.off = 0;
      h.len = Track(r, h, 0, static_cast<size_t>(n));
      h.bytes.fetch_add(h.len, std::memory_order_relaxed);
      r->last_active = NowMs();
      if (h.len == 0) h.Free();
      continue;
    }
    h.Free();
    if (n == 0) {
      h.eof = true;
      Ended(r, 1);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      r->rd[1] = r->urgent[1] = false;
      return Pumped::kWaiting;
    }
    Finish(r, Reason::kUpstreamError, errno, graveyard, true);
    return Pumped::kClosed;
  }
  return Pumped::kMore;
}

// Edge-triggered: every edge pumps both directions (a TLS read may wait on the client's POLLOUT and a TLS write
// on its POLLIN, so an edge on one side can concern either direction). True when a direction has work left.
bool PumpBoth(Relay* r, std::vector<Relay*>* graveyard) {
  Pumped up = PumpUp(r, graveyard);
  if (up == Pumped::kClosed) return false;
  Pumped down = PumpDown(r, graveyard);
  if (down == Pumped::kClosed) return false;
  if (r->going_away) {
    bool was = r->lingering;
    MaybeSayGoingAway(r, NowMs());
    if (!was && r->lingering) {
      // the Close frames were queued now: send them (no new edge would come for sockets already writable)
      if (PumpUp(r, graveyard) == Pumped::kClosed || PumpDown(r, graveyard) == Pumped::kClosed) return false;
    }
    if (r->lingering && r->up.shut && r->down.shut && Drained(r)) {
      Finish(r, Reason::kShutdown, 0, graveyard, true);
      return false;
    }
    if (r->lingering && (r->up.len > 0 || r->down.len > 0 || !r->up.shut || !r->down.shut)) return true;  // Close frames to send
  }
  return up == Pumped::kMore || down == Pumped::kMore;
}

// shutdown(): going away, as the JS relay does for WebSocket tunnels; a direction whose framing was lost is cut.
void StartGoingAway(Relay* r, std::vector<Relay*>* graveyard) {
  if (r->going_away) return;
  if (!r->websocket || r->up.frames.Broken() || r->down.frames.Broken()) {
    Finish(r, Reason::kShutdown, 0, graveyard, true);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(g.mu);
    g.going_away++;
  }
  r->going_away = true;
  r->deadline = NowMs() + kGoingAwayWaitMs;
  for (Held* h : {&r->up, &r->down})
    if (h->frames.AtBoundary()) h->stopped = true;
  PumpBoth(r, graveyard);
}

// Edge triggered: a relay with work left, or whose bytes arrived while it was paused (no new edge will come),
// is pumped again after this batch of events.
void Queue(Relay* r, std::vector<Relay*>* again) {
  if (r->closed || r->queued) return;
  r->queued = true;
  again->push_back(r);
}

void RunCommands(std::vector<Relay*>* graveyard, std::vector<Relay*>* again) {
  g.loop.TakeWake();
  std::vector<std::pair<Relay*, Command>> todo;
  {
    std::lock_guard<std::mutex> lock(g.mu);
    for (const Command& c : g.commands) {
      auto it = g.relays.find(c.id);
      if (it != g.relays.end()) todo.emplace_back(it->second, c);
    }
    g.commands.clear();
  }
  for (auto& [relay, c] : todo) {
    if (relay->closed) continue;
    if (c.pause >= 0) {
      relay->up.paused = c.pause == 1;
      if (c.pause == 0) Queue(relay, again);
    } else if (c.going_away) StartGoingAway(relay, graveyard);
    else Finish(relay, c.reason, 0, graveyard, true);
  }
}

void SweepIdle(uint64_t now, std::vector<Relay*>* graveyard) {
  std::vector<std::pair<Relay*, Reason>> expired;
  std::vector<Relay*> due;
  {
    std::lock_guard<std::mutex> lock(g.mu);
    // every relay is looked at only when some have an idle bound or a shutdown deadline (none by default)
    if (g.with_idle > 0 || g.going_away > 0) for (auto& [id, r] : g.relays) {
      if (r->going_away) {
        if (now >= r->deadline) due.push_back(r);
      } else if (r->idle_ms > 0 && now - r->last_active >= r->idle_ms) {
        expired.emplace_back(r, Reason::kIdleTimeout);
      }
    }
  }
  // (a relay expired twice is finished once: Finish returns for a closed one)
  g.half_open.Expired(now, Reason::kHalfClosedTimeout, &expired);
  for (auto [r, reason] : expired) Finish(r, reason, 0, graveyard, true);
  for (Relay* r : due) {
    if (r->closed) continue;
    if (r->lingering) Finish(r, Reason::kShutdown, 0, graveyard, true);  // the peers did not close in time
    else PumpBoth(r, graveyard);  // the wait is over: Close frames where a boundary allows
  }
}

void Loop() {
  epoll_event events[kMaxEvents];
  std::vector<Relay*> graveyard, again, next;
  uint64_t last_sweep = NowMs();
  for (;;) {
    int timeout = -1;
    {
      std::lock_guard<std::mutex> lock(g.mu);
      for (Relay* r : g.unborn) FreeRelay(r);
      g.unborn.clear();
      if (g.stopping) break;
      if (g.with_idle > 0 || g.going_away > 0) timeout = kIdleSweepMs;
    }
    if (!g.half_open.Empty()) timeout = kIdleSweepMs;
    if (!again.empty()) timeout = 0;
    int limit = bridge != nullptr ? bridge->BeforeWait() : -1;
    if (limit >= 0 && (timeout < 0 || limit < timeout)) timeout = limit;
    int n = epoll_wait(g.loop.epfd, events, kMaxEvents, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < n; i++) {
      if (events[i].data.ptr == nullptr) {
        RunCommands(&graveyard, &again);
        continue;
      }
      Endpoint* ep = static_cast<Endpoint*>(events[i].data.ptr);
      Relay* r = ep->relay;
      AwaitRegistered(r->registration, g.mu);
      if (r->closed) continue;
      const uint32_t evs = events[i].events;
      const int side = ep->side;
      if (evs & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR | EPOLLPRI)) r->rd[side] = true;
      if (evs & EPOLLPRI) r->urgent[side] = true;
      if (evs & (EPOLLOUT | EPOLLHUP | EPOLLERR)) r->wr[side] = true;
      if (evs & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        r->hup[side] = true;
        // a paused client that hung up is read anyway (its close_notify, FIN or error ends the relay as usual)
        if (side == 0) r->up.paused = false;
      }
      if (PumpBoth(r, &graveyard)) Queue(r, &again);
    }
    next.clear();
    for (Relay* r : again) {
      r->queued = false;
      if (r->closed) continue;
      if (PumpBoth(r, &graveyard) && !r->closed && !r->queued) {
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
  std::vector<Relay*> all;
  {
    std::lock_guard<std::mutex> lock(g.mu);
    for (auto& [id, r] : g.relays) all.push_back(r);
  }
  for (Relay* r : all) Finish(r, Reason::kShutdown, 0, &graveyard, false);
  for (Relay* r : graveyard) delete r;
}

bool EnsureStartedLocked(std::string* error) {
  if (g.started) return true;
  if (g.stopping) {
    *error = "the TLS relay was stopped";
    return false;
  }
  epoll_data_t wake{};
  wake.ptr = nullptr;  // the wake-up fd is the only event without an Endpoint
  if (!g.loop.Start(Loop, wake, "TLS relay", error)) return false;
  g.started = true;
  return true;
}

void Wake() { g.loop.Wake(); }

// The bytes a WebSocket tunnel relayed each way before the hand-over (the leftovers): the frame trackers start
// where those left the two frame streams.
struct Seen {
  std::string up;
  std::string down;
};

// JS thread. Takes the session and both fds (freed/closed on failure too); returns the id or 0 with `error`.
// `seen` null: a raw relay (no frames followed, a cut at shutdown).
uint64_t Start(int client_fd, tls::Session* session, int upstream_fd, uint32_t idle_ms, uint32_t half_closed_ms, const Seen* seen, std::string* error) {
  Relay* r = new Relay();
  r->websocket = seen != nullptr;
  if (seen != nullptr) {
    r->up.frames = FrameTracker(true);  // client to server: masked
    r->up.frames.Feed(reinterpret_cast<const unsigned char*>(seen->up.data()), seen->up.size());
    r->down.frames.Feed(reinterpret_cast<const unsigned char*>(seen->down.data()), seen->down.size());
  }
  r->fd[0] = client_fd;
  r->fd[1] = upstream_fd;
  r->tls = session;
  // read-ahead is on from Session::New (one read() takes whatever records are there; SSL_has_pending tells the
  // pumps when records wait in OpenSSL's buffer rather than in the socket): here its buffer grows to kReadAhead
  SSL_set_default_read_buffer_len(session->ssl(), kReadAhead);
  r->idle_ms = idle_ms;
  r->half_closed_ms = half_closed_ms;
  r->last_active = NowMs();
  for (int s = 0; s < 2; s++) {
    r->ep[s] = Endpoint{r, s};
    int flags = fcntl(r->fd[s], F_GETFL);
    if (flags < 0 || fcntl(r->fd[s], F_SETFL, flags | O_NONBLOCK) != 0) {
      *error = std::string("fcntl(O_NONBLOCK): ") + strerror(errno);
      FreeRelay(r);
      return 0;
    }
  }
  std::unique_lock<std::mutex> lock(g.mu);
  if (!EnsureStartedLocked(error)) {
    lock.unlock();
    FreeRelay(r);
    return 0;
  }
  r->id = g.next_id++;
  g.relays.emplace(r->id, r);
  if (idle_ms > 0) g.with_idle++;
  // Registered while holding the lock (see AwaitRegistered): the relay thread cannot end the relay before both
  // fds are in. The upstream's fd first, as relay.cc: the usual early event (the client's FIN or close_notify right
  // behind the 101) then comes when nothing is left to wait for.
  for (int s : {1, 0}) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLET;
    ev.data.ptr = &r->ep[s];
    if (epoll_ctl(g.loop.epfd, EPOLL_CTL_ADD, r->fd[s], &ev) != 0) {
      *error = std::string("epoll_ctl: ") + strerror(errno);
      g.relays.erase(r->id);
      if (idle_ms > 0) g.with_idle--;
      if (s == 1) {
        lock.unlock();
        FreeRelay(r);
        return 0;
      }
      // fd[1] was in the set: an event of it may be in the relay thread's hands, which frees the relay
      epoll_ctl(g.loop.epfd, EPOLL_CTL_DEL, r->fd[1], nullptr);
      r->closed = true;
      Release(r);
      g.unborn.push_back(r);
      r->registration.store(kGivenUp, std::memory_order_release);
      return 0;
    }
  }
  r->registration.store(kRegistered, std::memory_order_release);
  return r->id;
}

EndBridge& OwnBridge(Napi::Env env) {
  if (bridge == nullptr || !bridge->Owns(env)) throw Napi::Error::New(env, "the TLS relay belongs to another JS environment");
  return *bridge;
}

uint64_t RelayIdArg(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "relay id must be a number");
  double v = info[0].As<Napi::Number>().DoubleValue();
  if (v < 1 || v != static_cast<double>(static_cast<uint64_t>(v))) throw Napi::TypeError::New(info.Env(), "bad relay id");
  return static_cast<uint64_t>(v);
}

// The optional `{ up, down }` of tlsRelayStart (Buffers or null): present for a WebSocket tunnel, absent for a
// raw relay (false).
bool SeenArg(const Napi::Value& v, Seen* out) {
  Seen& seen = *out;
  if (!v.IsObject()) return false;
  Napi::Object o = v.As<Napi::Object>();
  Napi::Value up = o.Get("up");
  Napi::Value down = o.Get("down");
  if (up.IsBuffer()) seen.up.assign(up.As<Napi::Buffer<char>>().Data(), up.As<Napi::Buffer<char>>().Length());
  if (down.IsBuffer()) seen.down.assign(down.As<Napi::Buffer<char>>().Data(), down.As<Napi::Buffer<char>>().Length());
  return true;
}

// tlsRelayStart(clientIoId, upstreamFd, idleMs, cb(reason, bytesUp, bytesDown, errno), seen?, halfClosedMs?) -> id > 0: the client
// connection left the native I/O (its id is free) for the relay; 0: it could not (bytes queued, a close
// pending), nothing changed; -1: it left but the relay could not start, so it is closed. The upstream fd is
// taken in every case.
Napi::Value StartJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsNumber() || !info[3].IsFunction()) {
    if (info.Length() > 1 && info[1].IsNumber()) close(info[1].As<Napi::Number>().Int32Value());
    throw Napi::TypeError::New(env, "tlsRelayStart(clientIoId, upstreamFd, idleMs, callback)");
  }
  int upstream_fd = info[1].As<Napi::Number>().Int32Value();
  EndBridge* br = bridge;
  int client_fd = -1;
  tls::Session* session = nullptr;
  if (br == nullptr || !br->Owns(env)) {
    close(upstream_fd);
    OwnBridge(env);  // throws
  }
  if (!io::DetachTls(env, info[0].As<Napi::Number>().Int32Value(), &client_fd, &session)) {
    close(upstream_fd);
    return Napi::Number::New(env, 0);
  }
  double idle = info[2].As<Napi::Number>().DoubleValue();
  uint32_t idle_ms = idle > 0 ? (idle > 4e9 ? 4000000000u : static_cast<uint32_t>(idle)) : 0;
  std::string error;
  Seen seen;
  bool websocket = SeenArg(info.Length() > 4 ? info[4] : env.Undefined(), &seen);
  uint32_t half_closed_ms = OptionalMs(info.Length() > 5 ? info[5] : env.Undefined(), "halfClosedMs");
  uint64_t id = Start(client_fd, session, upstream_fd, idle_ms, half_closed_ms, websocket ? &seen : nullptr, &error);
  if (id == 0) return Napi::Number::New(env, -1);  // Start closed both (EMFILE on epoll, thread failure)
  br->Expect(env, id, info[3].As<Napi::Function>());
  return Napi::Number::New(env, static_cast<double>(id));
}

// tlsRelayClose(id, reason) -> false when the relay has already ended (its callback is on its way).
Napi::Value CloseJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  OwnBridge(env);
  uint64_t id = RelayIdArg(info);
  Reason reason;
  if (info.Length() < 2 || !info[1].IsString() || !ParseReason(info[1].As<Napi::String>().Utf8Value(), &reason)) {
    throw Napi::TypeError::New(env, "tlsRelayClose(id, reason): reason must be a ClosedBy name");
  }
  {
    std::lock_guard<std::mutex> lock(g.mu);
    if (!g.started || g.relays.find(id) == g.relays.end()) return Napi::Boolean::New(env, false);
    // "shutdown" is the end of the drain: Close frames first for a WebSocket tunnel; a raw relay is cut
    g.commands.push_back(Command{id, reason, reason == Reason::kShutdown});
  }
  Wake();
  return Napi::Boolean::New(env, true);
}

// tlsRelayPause(id, paused) -> false when the relay has already ended: stops (or restarts) reading the client.
// For a raw relay whose destination cannot push back itself (uWebSockets.js reads a WebSocket whatever its
// backend does): bytes already decrypted still go out; the client's hang-up is still seen.
Napi::Value PauseJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  OwnBridge(env);
  uint64_t id = RelayIdArg(info);
  if (info.Length() < 2 || !info[1].IsBoolean()) throw Napi::TypeError::New(env, "tlsRelayPause(id, paused)");
  {
    std::lock_guard<std::mutex> lock(g.mu);
    if (!g.started || g.relays.find(id) == g.relays.end()) return Napi::Boolean::New(env, false);
    g.commands.push_back(Command{id, Reason::kShutdown, false, static_cast<int8_t>(info[1].As<Napi::Boolean>().Value() ? 1 : 0)});
  }
  Wake();
  return Napi::Boolean::New(env, true);
}

// tlsRelayStats(id) -> { bytesUp, bytesDown, upBlocked, downBlocked } | null once ended.
Napi::Value StatsJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t id = RelayIdArg(info);
  std::lock_guard<std::mutex> lock(g.mu);
  auto it = g.relays.find(id);
  if (it == g.relays.end()) return env.Null();
  Relay* r = it->second;
  Napi::Object o = Napi::Object::New(env);
  o.Set("bytesUp", Napi::Number::New(env, static_cast<double>(r->up.bytes.load(std::memory_order_relaxed))));
  o.Set("bytesDown", Napi::Number::New(env, static_cast<double>(r->down.bytes.load(std::memory_order_relaxed))));
  o.Set("upBlocked", Napi::Boolean::New(env, r->up.blocked.load(std::memory_order_relaxed)));
  o.Set("downBlocked", Napi::Boolean::New(env, r->down.blocked.load(std::memory_order_relaxed)));
  return o;
}

// tlsRelayStatus() -> { active, endsDelivered, endWakes } (the last two as the splice relay's status())
Napi::Value StatusJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  {
    std::lock_guard<std::mutex> lock(g.mu);
    o.Set("active", Napi::Number::New(env, static_cast<double>(g.relays.size())));
  }
  o.Set("endsDelivered", Napi::Number::New(env, bridge != nullptr ? static_cast<double>(bridge->Delivered()) : 0));
  o.Set("endWakes", Napi::Number::New(env, bridge != nullptr ? static_cast<double>(bridge->Wakes()) : 0));
  return o;
}

void Teardown(void* /*arg*/) {
  {
    std::lock_guard<std::mutex> lock(g.mu);
    g.stopping = true;
  }
  if (g.started) {
    Wake();
    g.loop.Join();
  }
  EndBridge* br = bridge;
  bridge = nullptr;
  delete br;
}

}  // namespace

void Register(Napi::Env env, Napi::Object exports) {
  exports.Set("tlsRelayStart", Napi::Function::New(env, StartJs, "tlsRelayStart"));
  exports.Set("tlsRelayClose", Napi::Function::New(env, CloseJs, "tlsRelayClose"));
  exports.Set("tlsRelayStats", Napi::Function::New(env, StatsJs, "tlsRelayStats"));
  exports.Set("tlsRelayPause", Napi::Function::New(env, PauseJs, "tlsRelayPause"));
  exports.Set("tlsRelayStatus", Napi::Function::New(env, StatusJs, "tlsRelayStatus"));
  if (bridge == nullptr) {
    bridge = new EndBridge(env, "portico-tls-relay", &bridge);
    napi_add_env_cleanup_hook(env, Teardown, nullptr);
  }
}

}  // namespace portico::tls_relay
