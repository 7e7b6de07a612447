// The open connections per client key of one worker (limits.connections_per_ip), shared by the L4 thread (l4.cc:
// its listeners' connections) and JavaScript (src/route/policy/conn-limit.ts: HTTP, HTTPS, their tunnels, the JS
// path's L4 relays), so that every connection of a client counts in one table. Pure counting under a mutex of its
// own (a leaf: nothing else is locked while it is held); the callers refuse and report.
#pragma once

#include <napi.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace portico::clients {

class Table {
 public:
  // Counts a connection of `key` when it has fewer than `max` open; false (nothing counted) when it has not.
  bool Acquire(const std::string& key, uint32_t max);
  // A counted connection of `key` ended.
  void Release(const std::string& key);
  uint32_t Count(const std::string& key);
  // Keys with at least one connection counted.
  size_t Size();

 private:
  std::mutex mu_;
  std::unordered_map<std::string, uint32_t> open_;  // an entry lives while its key has connections open
};

// Table `id` (from clientTable()), null when there is none.
std::shared_ptr<Table> Find(uint32_t id);

void Register(Napi::Env env, Napi::Object exports);

}  // namespace portico::clients
