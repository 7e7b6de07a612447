// The splice relay engine: moves bytes between two connected sockets on its own thread (one epoll set, edge
// triggered): small reads with recv/send through one buffer, bulk with splice(2) through pipes taken from a pool
// only while bytes are in flight. Pure C++ and POSIX, no N-API: addon.cc binds it
// to JS. Every fd handed to Start() belongs to the engine from then on and is closed exactly once by it.
// WebSocket tunnels are relayed frame-aware (frames.h) so that shutdown can close them with Close 1001.
#pragma once

#include <cstdint>
#include <string>

namespace portico {

// Why a relay ended; the names match ClosedBy in src/tunnel/relay.ts.
enum class Reason : uint8_t { kClient, kUpstream, kClientError, kUpstreamError, kIdleTimeout, kLifetime, kShutdown, kHalfClosedTimeout };

const char* ReasonName(Reason reason);
bool ParseReason(const std::string& name, Reason* out);

struct RelayEnd {
  uint64_t id;
  Reason reason;
  uint64_t bytes_up;    // read from the client, written to the upstream
  uint64_t bytes_down;  // read from the upstream, written to the client
  int error;            // errno behind an *_error reason, else 0
};

struct RelayStats {
  uint64_t bytes_up;
  uint64_t bytes_down;
  // A direction is blocked when its pipe holds bytes the destination socket does not take (backpressure).
  bool up_blocked;
  bool down_blocked;
};

// The relay thread's pipe pool: pipes open (free + in use), held by a direction now, the cap, reads copied
// through a user-space buffer because no pipe could be had, and pipe2 failures.
struct PipeStats {
  size_t open;
  size_t in_use;
  size_t cap;
  uint64_t copies;
  uint64_t pipe_errors;
};

// A WebSocket tunnel's bytes each way relayed before the hand-over (the frame trackers start after them).
struct WebSocketStart {
  std::string up;
  std::string down;
};

// How Start() may treat the fds it is given.
struct StartOptions {
  // Both fds are known to be non-blocking (made with SOCK_NONBLOCK and never changed): no fcntl per fd.
  bool nonblocking = false;
  // On failure the fds stay the caller's, open (the caller then puts them back where they came from); by
  // default Start() owns them from the call and closes them when it fails.
  bool keep_on_failure = false;
  // Nothing else refers to the fds' open files (no dup, no other process): close() alone takes them out of
  // every epoll set, so the end of the relay makes no EPOLL_CTL_DEL per fd. Never for dup()ed fds (libuv's).
  bool sole_owner = false;
  // Bytes the caller read from the client and could not write to the upstream itself: written before anything
  // the client sends next (counted by the caller, not in bytes_up).
  std::string upstream_first;
  // > 0: TCP keep-alive on the upstream socket, first probe after this many idle seconds, armed once the relay has
  // lived a second (a short connection makes no setsockopt for it; probes come after a minute's silence anyway).
  int upstream_keepalive_s = 0;
  // With upstream_keepalive_s: the client's socket gets the same keep-alive, armed at the same time (a WebSocket
  // tunnel's two legs: no setsockopt on the JS thread at the hand-over, none at all for a tunnel that lives < 1 s).
  bool client_keepalive = false;
  // false: the relay ends (both sockets closed) as soon as either source's FIN is read and what that source sent
  // is written out, as nginx `stream` with `proxy_half_close off` (its default). true (default): the FIN is
  // forwarded (shutdown(SHUT_WR)) and the other direction runs on until its own source ends. Raw relays only.
  bool half_close = true;
  // > 0: the relay ends (Reason::kLifetime) once it has lived this long, checked by the sweep every kIdleSweepMs
  // (tunnel.max_lifetime of an L4 listener served by the addon).
  uint32_t lifetime_ms = 0;
  // > 0: once one source's FIN is passed on and the other direction runs on (half-close), the relay ends
  // (Reason::kHalfClosedTimeout) after this long with no byte read either way, checked by the sweep (tunnel.half_closed_timeout).
  uint32_t half_closed_ms = 0;
};

// TCP keep-alive on `fd` as libuv sets it (uv_tcp_keepalive): first probe after `idle_s` idle seconds, then every
// second, ten of them. Best effort (a unix socket refuses it).
void SetKeepAlive(int fd, int idle_s);

// Called on the relay thread, once per relay, after its fds are closed. Must not block.
using EndSink = void (*)(const RelayEnd& end);
// Called on the relay thread before each wait for events: the longest it may sleep (ms), -1 for no limit of its
// own. Lets a sink that holds ends back (addon.cc) bound how long they wait. Must not block.
using BeforeWait = int (*)();

// Starts the relay thread on first use. All methods are safe to call from any one other thread.
class RelayEngine {
 public:
  explicit RelayEngine(EndSink sink, BeforeWait before_wait = nullptr) : sink_(sink), before_wait_(before_wait) {}
  // Takes ownership of both fds (closed on failure too, unless options.keep_on_failure). Returns the relay id (> 0),
  // or 0 with `error` set. Registering a relay wakes the relay thread only when a socket already has something to
  // read: room to write is asked of epoll only once a write found a socket full.
  // `websocket` (may be null: raw bytes): the tunnel carries WebSocket frames; the relay follows their headers.
  uint64_t Start(int client_fd, int upstream_fd, uint32_t idle_ms, const WebSocketStart* websocket, std::string* error,
                 StartOptions options = StartOptions());
  // Asks the relay thread to close relay `id` with `reason`; false when no such relay is active.
  bool RequestClose(uint64_t id, Reason reason);
  // End of the shutdown grace: a WebSocket relay ends the frame in progress each way (at most 0.5 s), writes a
  // Close 1001 each way (masked to the upstream), FINs, and reads what comes until both peers closed (at most
  // 1 s); it then ends with kShutdown. A raw relay, or one whose framing is lost, is closed at once as
  // RequestClose(id, kShutdown). False when no such relay is active.
  bool RequestGoingAway(uint64_t id);
  // Raw relays: stops (paused) or restarts reading direction `direction` (0 client -> upstream, 1 upstream ->
  // client); bytes already read still go out, a hang-up of the source is still seen. False when no such relay.
  bool RequestPause(uint64_t id, int direction, bool paused);
  bool Stats(uint64_t id, RelayStats* out);
  size_t Active();
  // Most pipes the pool may hold at once (free + in use); above it a direction copies through a small buffer.
  void SetPipeCap(size_t cap);
  PipeStats Pipes();
  // Stops the thread and closes every relay without reporting (process teardown). Idempotent.
  void Stop();

 private:
  EndSink sink_;
  BeforeWait before_wait_;
};

}  // namespace portico
