// The relays of one relay thread that are half-closed under a tunnel.half_closed_timeout bound: one source's end was
// passed on and the other direction runs on. The sweep looks at these only (not every relay), and a relay joins and
// leaves in O(1) without a lock: relay thread only. Shared by relay.cc (splice and L4 relays) and tls-relay.cc.
#ifndef PORTICO_NATIVE_HALF_OPEN_H_
#define PORTICO_NATIVE_HALF_OPEN_H_

#include <cstdint>
#include <utility>
#include <vector>

namespace portico {

// A relay's `half_at` when it is not in a HalfOpen list.
constexpr size_t kNotHalfOpen = SIZE_MAX;

// R has `uint32_t half_closed_ms` (0: no bound), `uint64_t last_active` (ms) and `size_t half_at` (its index here,
// kNotHalfOpen when out).
template <typename R>
class HalfOpen {
 public:
  // `r` just went half-closed: with a bound it is swept from now, and the end counts as activity (the bound is the
  // silence after it, not since the last byte before it). Again for a relay already here: nothing.
  void Enter(R* r, uint64_t now) {
    if (r->half_closed_ms == 0 || r->half_at != kNotHalfOpen) return;
    r->last_active = now;
    r->half_at = list_.size();
    list_.push_back(r);
  }

  // At the relay's end (before its memory goes): out, if it was here.
  void Leave(R* r) {
    if (r->half_at == kNotHalfOpen) return;
    R* last = list_.back();
    list_[r->half_at] = last;
    last->half_at = r->half_at;
    list_.pop_back();
    r->half_at = kNotHalfOpen;
  }

  bool Empty() const { return list_.empty(); }

  // The relays silent for their bound at `now`, each added to `out` as (relay, reason).
  template <typename Reason>
  void Expired(uint64_t now, Reason reason, std::vector<std::pair<R*, Reason>>* out) const {
    for (R* r : list_) {
      if (now - r->last_active >= r->half_closed_ms) out->emplace_back(r, reason);
    }
  }

 private:
  std::vector<R*> list_;
};

}  // namespace portico

#endif  // PORTICO_NATIVE_HALF_OPEN_H_
