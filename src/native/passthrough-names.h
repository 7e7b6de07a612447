// The passthrough names of a TLS listener that also terminates (certificates and `tls.passthrough` on one port),
// compiled for io.cc's accept: which name goes through untouched and which is the addon's to terminate. The rules of
// src/tunnel/l4.ts PassthroughTable, byte for byte (test/fuzz/native-passthrough-names.fuzz.test.ts holds the two
// together): names lower-cased, an exact name first (the first entry of a name wins), then `*.suffix` wildcards
// longest first (the first of equal suffixes wins), a wildcard never matching its bare suffix. Pure; no I/O.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace portico::passthrough {

class Names {
 public:
  // `entries`: the listener's `sni` values in config order; Match answers an index into them.
  explicit Names(const std::vector<std::string>& entries) {
    for (size_t i = 0; i < entries.size(); i++) {
      std::string name = Lower(entries[i]);
      if (name.size() >= 2 && name[0] == '*' && name[1] == '.') {
        std::string suffix = name.substr(1);  // ".example.com"
        bool dup = false;
        for (const auto& w : wildcards_) dup = dup || w.first == suffix;
        if (!dup) wildcards_.emplace_back(std::move(suffix), static_cast<int32_t>(i));
      } else {
        exact_.emplace(std::move(name), static_cast<int32_t>(i));  // emplace keeps the first of a name
      }
    }
    std::stable_sort(wildcards_.begin(), wildcards_.end(), [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  }

  // The entry that passes `sni` through (already lower case, as client-hello.h gives it), or -1: terminate.
  int32_t Match(std::string_view sni) const {
    auto it = exact_.find(std::string(sni));
    if (it != exact_.end()) return it->second;
    for (const auto& [suffix, index] : wildcards_) {
      if (sni.size() > suffix.size() && sni.compare(sni.size() - suffix.size(), suffix.size(), suffix) == 0) return index;
    }
    return -1;
  }

 private:
  // ASCII only: the schema admits names of letters, digits, '_', '-', '.' and a leading "*." (config/schema.ts sniPattern)
  static std::string Lower(const std::string& s) {
    std::string out(s);
    for (char& c : out) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c | 0x20);
    }
    return out;
  }

  std::unordered_map<std::string, int32_t> exact_;
  std::vector<std::pair<std::string, int32_t>> wildcards_;
};

}  // namespace portico::passthrough
