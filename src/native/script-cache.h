// The native exchange's script cache (script-cache.cc): per route and request path, the script's FastCGI pairs as
// JS wrote them (fastcgi-params.ts scriptParams) and until when they hold. JS fills it whenever it finds a script on
// a route the addon may start (fastcgi-script.ts knownScript / resolveScript) and removes an entry when it forgets
// the script; a miss or an expired entry is "not mine" (the request goes to JS, which checks the file again). The
// C++ never decodes a path or looks at the file system. Bounded: past kMax entries it is emptied, as JS's map is.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>

namespace portico::nx {

class ScriptCache {
 public:
  static constexpr size_t kMax = 4096;

  void Put(uint32_t route, const uint8_t* path, size_t path_len, std::string pairs, double until_ms);
  void Forget(uint32_t route, const uint8_t* path, size_t path_len);
  // The pairs of route's `path`, or null when unknown or expired at `now_ms`.
  const std::string* Find(uint32_t route, const uint8_t* path, size_t path_len, double now_ms);
  size_t size() const { return map_.size(); }

 private:
  struct Entry {
    std::string pairs;
    double until_ms = 0;
  };
  static void Key(std::string* key, uint32_t route, const uint8_t* path, size_t path_len);
  std::unordered_map<std::string, Entry> map_;
  std::string key_;  // the lookup key, reused (no allocation per request once grown)
};

}  // namespace portico::nx
