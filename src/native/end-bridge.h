// How a relay thread's ends reach their JS callbacks (the splice relay in addon.cc, the TLS relay in tls-relay.cc).
// An end does not wake the JS thread by itself: it is held until the event loop's next turn (a prepare handle
// delivers it before the loop sleeps again), at most kEndHoldMs, after which the relay thread wakes the loop
// through a thread-safe function. Under load the loop turns anyway (a short WebSocket tunnel ends between two
// handshakes), so an end then costs no eventfd write, no wake-up of the JS thread and no epoll round of its own.
#pragma once

#include <uv.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <vector>

#include <napi.h>

#include "relay.h"

namespace portico {

// How long an end may wait for the loop to turn for something else (the next connection, a timer) before the
// relay thread wakes it for the end alone.
constexpr uint64_t kEndHoldMs = 5;

class EndBridge {
 public:
  // JS thread. `slot`: the global that points at this bridge (cleared before the bridge is deleted), read by the
  // loop's prepare handle and by a wake-up still queued at teardown.
  EndBridge(Napi::Env env, const char* name, EndBridge* const* slot);
  // JS thread, after the relay thread stopped (it must never hold or wake again).
  ~EndBridge();
  EndBridge(const EndBridge&) = delete;
  EndBridge& operator=(const EndBridge&) = delete;

  bool Owns(Napi::Env env) const { return env_ == static_cast<napi_env>(env); }
  // JS thread: relay `id` reports to `cb(reason, bytesUp, bytesDown, errno)` once; the loop stays alive meanwhile.
  void Expect(Napi::Env env, uint64_t id, Napi::Function cb);
  // Relay thread: `end` waits for the loop's next turn (no syscall).
  void Hold(const RelayEnd& end);
  // Relay thread, before it sleeps: the longest it may sleep (ms) for the ends it holds, or -1; ends held
  // kEndHoldMs wake the loop now.
  int BeforeWait();
  // JS thread: relays expected to report, ends delivered, wake-ups asked of the loop for held ends.
  size_t Expected() const { return callbacks_.size(); }
  uint64_t Delivered() const { return delivered_; }
  uint64_t Wakes();

 private:
  static void OnPrepare(uv_prepare_t* handle);
  // JS thread: every held end goes to its callback (each a callback of its own, so nextTicks and promise jobs run
  // after each as after any I/O callback).
  void Deliver(Napi::Env env);

  napi_env env_;
  EndBridge* const* slot_;
  Napi::ThreadSafeFunction tsfn_;
  Napi::AsyncContext async_;
  uv_prepare_t* prepare_ = nullptr;  // unreferenced: it never keeps the loop alive
  std::unordered_map<uint64_t, Napi::FunctionReference> callbacks_;
  size_t refs_ = 0;  // callbacks waiting: the tsfn keeps the loop alive only while there are some
  uint64_t delivered_ = 0;
  std::mutex mu_;
  std::vector<RelayEnd> ended_;  // under mu_: held ends, in the order they came
  uint64_t ended_since_ = 0;     // under mu_: monotonic ms of the oldest
  bool woken_ = false;           // under mu_: a tsfn call to deliver them is queued
  uint64_t wakes_ = 0;           // under mu_
  std::atomic<bool> holding_{false};  // ended_ is not empty (read without the lock on every turn of both loops)
};

}  // namespace portico
