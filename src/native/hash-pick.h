// The `hash` policy of an L4 compile, as src/upstream/balancer.ts's Maglev picks for `{ policy: hash, key:
// $remote_addr }`: the key's hash (hashString) and the pick over the Maglev table JavaScript built
// (buildMaglevTable), walking past ineligible targets as pickFor does. The key itself is client-key.h's at /128 (the
// client's address unmapped, as hash-key.ts connectionKey forms it).
// Pure: no N-API, no locks (the fuzz test holds key, hash and pick to JavaScript's through l4.cc's l4HashKey and
// l4HashPick).
#ifndef PORTICO_NATIVE_HASH_PICK_H_
#define PORTICO_NATIVE_HASH_PICK_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

namespace portico::hashpick {

// balancer.ts MAX_WALK: table slots looked at past the key's own before the scan over the targets.
constexpr size_t kMaxWalk = 256;

// balancer.ts hashString(s, seed): FNV-1a over the key's UTF-16 code units, then murmur3's fmix32. A key here is an
// address's text: ASCII, one byte one code unit (a zone's interface name beyond ASCII would hash otherwise: Linux
// names are ASCII in practice).
inline uint32_t HashString(const std::string& s, uint32_t seed = 0) {
  uint32_t h = 0x811c9dc5u ^ seed;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x01000193u;
  }
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

// Maglev.pickFor after its pins: the target in the key's slot (hash `h`) of `table` (slot -> target index, `size`
// slots, over `n` targets) when `eligible(i)`, else the next eligible one within kMaxWalk slots, else a scan of the
// targets from h % n; -1 when none is eligible (or the table is empty).
template <typename Eligible>
int32_t MaglevPick(const uint32_t* table, size_t size, size_t n, uint32_t h, Eligible eligible) {
  if (size == 0 || n == 0) return -1;
  size_t slot = h % size;
  if (table[slot] < n && eligible(table[slot])) return static_cast<int32_t>(table[slot]);
  const size_t walk = std::min(size, kMaxWalk);
  for (size_t step = 1; step < walk; step++) {
    if (++slot == size) slot = 0;
    if (table[slot] < n && eligible(table[slot])) return static_cast<int32_t>(table[slot]);
  }
  const size_t start = h % n;
  for (size_t i = 0; i < n; i++) {
    const size_t t = (start + i) % n;
    if (eligible(t)) return static_cast<int32_t>(t);
  }
  return -1;
}

}  // namespace portico::hashpick

#endif  // PORTICO_NATIVE_HASH_PICK_H_
