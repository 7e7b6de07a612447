// The splice relay engine: moves bytes between two connected sockets with splice(2) through one pipe per
// direction, on its own thread (one epoll set, edge triggered). Pure C++ and POSIX, no N-API: addon.cc binds it
// to JS. Every fd handed to Start() belongs to the engine from then on and is closed exactly once by it.
#pragma once

#include <cstdint>
#include <string>

namespace portico {

// Why a relay ended; the names match ClosedBy in src/tunnel/relay.ts.
enum class Reason : uint8_t { kClient, kUpstream, kClientError, kUpstreamError, kIdleTimeout, kLifetime, kShutdown };

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

// Called on the relay thread, once per relay, after its fds are closed. Must not block.
using EndSink = void (*)(const RelayEnd& end);

// Starts the relay thread on first use. All methods are safe to call from any one other thread.
class RelayEngine {
 public:
  explicit RelayEngine(EndSink sink) : sink_(sink) {}
  // Takes ownership of both fds (closed on failure too). Returns the relay id (> 0), or 0 with `error` set.
  uint64_t Start(int client_fd, int upstream_fd, uint32_t idle_ms, std::string* error);
  // Asks the relay thread to close relay `id` with `reason`; false when no such relay is active.
  bool RequestClose(uint64_t id, Reason reason);
  bool Stats(uint64_t id, RelayStats* out);
  size_t Active();
  // Stops the thread and closes every relay without reporting (process teardown). Idempotent.
  void Stop();

 private:
  EndSink sink_;
};

}  // namespace portico
