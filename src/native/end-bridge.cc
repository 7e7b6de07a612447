// See end-bridge.h.
#include "end-bridge.h"

#include <time.h>

#include <utility>

namespace portico {

namespace {

uint64_t MonoMs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

}  // namespace

EndBridge::EndBridge(Napi::Env env, const char* name, EndBridge* const* slot)
    : env_(env), slot_(slot), async_(env, name) {
  tsfn_ = Napi::ThreadSafeFunction::New(env, Napi::Function(), name, 0, 1);
  tsfn_.Unref(env);
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) == napi_ok && loop != nullptr) {
    prepare_ = new uv_prepare_t;
    uv_prepare_init(loop, prepare_);
    prepare_->data = const_cast<EndBridge**>(slot);
    uv_prepare_start(prepare_, OnPrepare);
    uv_unref(reinterpret_cast<uv_handle_t*>(prepare_));
  }
}

EndBridge::~EndBridge() {
  tsfn_.Release();
  callbacks_.clear();
  if (prepare_ != nullptr) {
    uv_prepare_stop(prepare_);
    uv_close(reinterpret_cast<uv_handle_t*>(prepare_), [](uv_handle_t* h) { delete reinterpret_cast<uv_prepare_t*>(h); });
  }
}

void EndBridge::Expect(Napi::Env env, uint64_t id, Napi::Function cb) {
  callbacks_.emplace(id, Napi::Persistent(cb));
  if (refs_++ == 0) tsfn_.Ref(env);
}

void EndBridge::Hold(const RelayEnd& end) {
  std::lock_guard<std::mutex> lock(mu_);
  if (ended_.empty()) ended_since_ = MonoMs();
  ended_.push_back(end);
  holding_.store(true, std::memory_order_release);
}

int EndBridge::BeforeWait() {
  if (!holding_.load(std::memory_order_acquire)) return -1;
  std::lock_guard<std::mutex> lock(mu_);
  if (ended_.empty() || woken_) return -1;
  uint64_t now = MonoMs();
  if (now < ended_since_ + kEndHoldMs) return static_cast<int>(ended_since_ + kEndHoldMs - now);
  // the queue is unbounded: NonBlockingCall fails only once the tsfn is closing (teardown)
  EndBridge* const* slot = slot_;
  woken_ = tsfn_.NonBlockingCall([slot](Napi::Env env, Napi::Function) {
    if (env != nullptr && *slot != nullptr) (*slot)->Deliver(env);
  }) == napi_ok;
  if (woken_) wakes_++;
  return -1;
}

uint64_t EndBridge::Wakes() {
  std::lock_guard<std::mutex> lock(mu_);
  return wakes_;
}

void EndBridge::OnPrepare(uv_prepare_t* handle) {
  EndBridge* br = *static_cast<EndBridge**>(handle->data);
  if (br != nullptr && br->holding_.load(std::memory_order_acquire)) br->Deliver(Napi::Env(br->env_));
}

void EndBridge::Deliver(Napi::Env env) {
  if (!holding_.load(std::memory_order_acquire)) return;
  std::vector<RelayEnd> ends;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ends.swap(ended_);
    ended_since_ = 0;
    woken_ = false;  // a tsfn call still queued finds nothing, or what came after this
    holding_.store(false, std::memory_order_relaxed);
  }
  for (const RelayEnd& e : ends) {
    auto it = callbacks_.find(e.id);
    if (it == callbacks_.end()) continue;
    Napi::FunctionReference cb = std::move(it->second);
    callbacks_.erase(it);
    if (refs_ > 0 && --refs_ == 0) tsfn_.Unref(env);
    delivered_++;
    Napi::HandleScope scope(env);
    try {
      cb.MakeCallback(env.Global(),
                      {Napi::String::New(env, ReasonName(e.reason)), Napi::Number::New(env, static_cast<double>(e.bytes_up)),
                       Napi::Number::New(env, static_cast<double>(e.bytes_down)), Napi::Number::New(env, e.error)},
                      async_);
    } catch (const Napi::Error& err) {
      napi_fatal_exception(env, err.Value());
    }
  }
}

}  // namespace portico
