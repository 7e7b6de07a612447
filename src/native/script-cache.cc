// See script-cache.h. Pure: no sockets, no N-API.
#include "script-cache.h"

#include <cstring>

namespace portico::nx {

// The route's four bytes, then the path's.
void ScriptCache::Key(std::string* key, uint32_t route, const uint8_t* path, size_t path_len) {
  key->resize(4 + path_len);
  std::memcpy(key->data(), &route, 4);
  if (path_len > 0) std::memcpy(key->data() + 4, path, path_len);
}

void ScriptCache::Put(uint32_t route, const uint8_t* path, size_t path_len, std::string pairs, double until_ms) {
  Key(&key_, route, path, path_len);
  auto it = map_.find(key_);
  if (it == map_.end() && map_.size() >= kMax) map_.clear();
  Entry& e = map_[key_];
  e.pairs = std::move(pairs);
  e.until_ms = until_ms;
}

void ScriptCache::Forget(uint32_t route, const uint8_t* path, size_t path_len) {
  Key(&key_, route, path, path_len);
  map_.erase(key_);
}

const std::string* ScriptCache::Find(uint32_t route, const uint8_t* path, size_t path_len, double now_ms) {
  Key(&key_, route, path, path_len);
  auto it = map_.find(key_);
  if (it == map_.end()) return nullptr;
  if (it->second.until_ms <= now_ms) {
    map_.erase(it);
    return nullptr;
  }
  return &it->second.pairs;
}

}  // namespace portico::nx
