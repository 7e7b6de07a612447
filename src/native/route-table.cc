// See route-table.h. Pure: no sockets, no N-API.
#include "route-table.h"

#include <cstring>

namespace portico::rq {
namespace {

// Hosts and paths are read eight bytes at a time: a request's host is hashed, then compared with a key or a suffix.
inline uint64_t Load(const uint8_t* p, size_t n) {  // n <= 8, zero-padded, little-endian
  uint64_t v = 0;
  if (n == 8) {
    std::memcpy(&v, p, 8);
    return v;
  }
  for (size_t k = 0; k < n; k++) v |= static_cast<uint64_t>(p[k]) << (8 * k);
  return v;
}

constexpr uint64_t kHigh = 0x8080808080808080ULL;

// ASCII upper case to lower case in each byte of x (bytes above 0x7f unchanged): 'A'..'Z' are the bytes b with
// b + 0x3f >= 0x80 and b + 0x25 < 0x80, computed on the low seven bits so no byte carries into the next
inline uint64_t FoldWord(uint64_t x) {
  const uint64_t low = x & ~kHigh;
  const uint64_t upper = (low + 0x3f3f3f3f3f3f3f3fULL) & ~(low + 0x2525252525252525ULL) & ~x & kHigh;
  return x | (upper >> 2);
}

// p[0..n) (folded when asked) hashed a word at a time
uint32_t Hash(const uint8_t* p, size_t n, bool fold) {
  constexpr uint64_t kMul = 0x9e3779b97f4a7c15ULL;
  uint64_t h = (n + 1) * kMul;
  for (size_t k = 0; k < n; k += 8) {
    uint64_t w = Load(p + k, n - k < 8 ? n - k : 8);
    if (fold) w = FoldWord(w);
    h = (h ^ w) * kMul;
    h ^= h >> 29;
  }
  return static_cast<uint32_t>(h ^ (h >> 32));
}

uint32_t HashOf(const std::string& s) {
  return Hash(reinterpret_cast<const uint8_t*>(s.data()), s.size(), false);
}

// p[0..n) (folded when asked) equals `key`
bool Same(const uint8_t* p, size_t n, const std::string& key, bool fold) {
  if (n != key.size()) return false;
  if (!fold) return std::memcmp(p, key.data(), n) == 0;
  const uint8_t* q = reinterpret_cast<const uint8_t*>(key.data());
  for (size_t k = 0; k < n; k += 8) {
    const size_t m = n - k < 8 ? n - k : 8;
    if (FoldWord(Load(p + k, m)) != Load(q + k, m)) return false;
  }
  return true;
}

// router.ts pick: the first candidate (tie order) whose methods fit
const RouteCandidate* Pick(const std::vector<RouteCandidate>& list, const uint8_t* m, size_t mn) {
  for (const RouteCandidate& c : list) {
    if (c.any_method) return &c;
    for (const std::string& name : c.methods)
      if (Same(m, mn, name, false)) return &c;
  }
  return nullptr;
}

// e.text at p[0..e.text.size()), each path byte or'ed with its fold mask (0x20 takes a letter's upper case too)
bool LiteralAt(const RouteRegex& e, const uint8_t* p) {
  const size_t n = e.text.size();
  const uint8_t* t = reinterpret_cast<const uint8_t*>(e.text.data());
  const uint8_t* f = reinterpret_cast<const uint8_t*>(e.fold.data());
  for (size_t k = 0; k < n; k += 8) {
    const size_t w = n - k < 8 ? n - k : 8;
    if ((Load(p + k, w) | Load(f + k, w)) != Load(t + k, w)) return false;
  }
  return true;
}

// RegExp.test of a literal regex (route-table.h RegexKind) on path[0..n)
bool MatchRegex(const RouteRegex& e, const uint8_t* path, size_t n) {
  const size_t tn = e.text.size();
  if (n < tn) return false;
  switch (e.kind) {
    case RegexKind::kExact:
      return n == tn && LiteralAt(e, path);
    case RegexKind::kPrefix:
      return LiteralAt(e, path);
    case RegexKind::kSuffix:
      return LiteralAt(e, path + n - tn);
    case RegexKind::kContains:
      for (size_t s = 0; s + tn <= n; s++)
        if (LiteralAt(e, path + s)) return true;
      return false;
    case RegexKind::kOpaque:
      break;
  }
  return false;
}

// router.ts PathTable.match, or kNotMine when it would ask V8's RegExp
RouteVerdict MatchPath(const RoutePathTable& t, const uint8_t* path, size_t n, const uint8_t* m, size_t mn, const RouteCandidate** found) {
  if (t.exact.size() > 0) {
    const int32_t k = t.exact.Find(path, n, false);
    if (k >= 0 && (*found = Pick(t.exact_lists[k], m, mn)) != nullptr) return RouteVerdict::kRoute;
  }
  // in file order, before any prefix; JS tests a regex, then picks among its routes: a regex none of whose routes
  // takes the method is passed over whatever it would say
  for (const RouteRegex& e : t.regexes) {
    const RouteCandidate* c = Pick(e.candidates, m, mn);
    if (c == nullptr) continue;
    if (e.kind == RegexKind::kOpaque) return RouteVerdict::kNotMine;
    if (MatchRegex(e, path, n)) {
      *found = c;
      return RouteVerdict::kRoute;
    }
  }
  for (const RoutePrefix& e : t.prefixes) {
    const size_t pn = e.prefix.size();
    if (n < pn || std::memcmp(path, e.prefix.data(), pn) != 0) continue;
    if (e.boundary && n != pn && path[pn] != '/') continue;
    if ((*found = Pick(e.candidates, m, mn)) != nullptr) return RouteVerdict::kRoute;
  }
  if ((*found = Pick(t.any, m, mn)) != nullptr) return RouteVerdict::kRoute;
  return RouteVerdict::kNoRoute;  // this class has none: the next one is tried
}

bool Ascii(const uint8_t* p, size_t n) {
  uint64_t any = 0;
  for (size_t k = 0; k < n; k += 8) any |= Load(p + k, n - k < 8 ? n - k : 8);
  return (any & kHigh) == 0;
}

// http/connection.ts ACME_CHALLENGE_PREFIX: answered before routing while an order is pending (state JS holds)
constexpr char kAcme[] = "/.well-known/acme-challenge/";
constexpr size_t kAcmeLen = sizeof kAcme - 1;

// The bytes' reader: little-endian u32 counts and indexes, strings as a u32 length and bytes.
struct Reader {
  const uint8_t* p;
  size_t len;
  size_t at = 0;
  std::string* error;

  bool Fail(const char* what) {
    if (error->empty()) *error = what;
    return false;
  }
  bool U8(uint8_t* v) {
    if (len - at < 1) return Fail("truncated");
    *v = p[at++];
    return true;
  }
  bool U32(uint32_t* v) {
    if (len - at < 4) return Fail("truncated");
    *v = static_cast<uint32_t>(p[at]) | static_cast<uint32_t>(p[at + 1]) << 8 | static_cast<uint32_t>(p[at + 2]) << 16 | static_cast<uint32_t>(p[at + 3]) << 24;
    at += 4;
    return true;
  }
  // a count of items of at least `min_bytes` each: never more than the bytes left could hold
  bool Count(uint32_t* n, size_t min_bytes) {
    if (!U32(n)) return false;
    if (*n > (len - at) / min_bytes) return Fail("count past the end");
    return true;
  }
  bool Str(std::string* s) {
    uint32_t n;
    if (!U32(&n)) return false;
    if (n > len - at) return Fail("string past the end");
    s->assign(reinterpret_cast<const char*>(p) + at, n);
    at += n;
    return true;
  }
  bool Candidates(std::vector<RouteCandidate>* out, uint32_t routes) {
    uint32_t n;
    if (!Count(&n, 5)) return false;
    out->resize(n);
    for (RouteCandidate& c : *out) {
      uint8_t has;
      if (!U32(&c.route) || !U8(&has)) return false;
      if (c.route >= routes || has > 1) return Fail("bad candidate");
      c.any_method = has == 0;
      if (has == 0) continue;
      uint32_t m;
      if (!Count(&m, 4)) return false;
      c.methods.resize(m);
      for (std::string& name : c.methods)
        if (!Str(&name)) return false;
    }
    return true;
  }
  // a kind, the literal, its fold mask (kOpaque: both empty), the candidates
  bool Regex(RouteRegex* e, uint32_t routes) {
    uint8_t kind;
    if (!U8(&kind) || !Str(&e->text) || !Str(&e->fold) || !Candidates(&e->candidates, routes)) return false;
    if (kind > static_cast<uint8_t>(RegexKind::kContains)) return Fail("bad regex kind");
    e->kind = static_cast<RegexKind>(kind);
    if (e->fold.size() != e->text.size()) return Fail("bad regex fold");
    if (e->kind == RegexKind::kOpaque && !e->text.empty()) return Fail("bad regex literal");
    for (size_t k = 0; k < e->text.size(); k++) {
      const uint8_t t = static_cast<uint8_t>(e->text[k]), f = static_cast<uint8_t>(e->fold[k]);
      if (t > 0x7f) return Fail("bad regex literal");
      if (f != 0 && (f != 0x20 || t < 'a' || t > 'z')) return Fail("bad regex fold");
    }
    return true;
  }
  bool Table(RoutePathTable* t, uint32_t routes) {
    uint32_t n;
    if (!Count(&n, 8)) return false;
    std::vector<std::string> paths(n);
    t->exact_lists.resize(n);
    for (uint32_t k = 0; k < n; k++)
      if (!Str(&paths[k]) || !Candidates(&t->exact_lists[k], routes)) return false;
    if (!t->exact.Build(std::move(paths))) return Fail("exact path twice");
    if (!Count(&n, 13)) return false;
    t->regexes.resize(n);
    for (RouteRegex& e : t->regexes)
      if (!Regex(&e, routes)) return false;
    if (!Count(&n, 9)) return false;
    t->prefixes.resize(n);
    for (RoutePrefix& e : t->prefixes) {
      uint8_t b;
      if (!Str(&e.prefix) || !U8(&b) || !Candidates(&e.candidates, routes)) return false;
      if (b > 1) return Fail("bad boundary");
      e.boundary = b == 1;
    }
    return Candidates(&t->any, routes);
  }
};

}  // namespace

bool StringIndex::Build(std::vector<std::string> keys) {
  keys_ = std::move(keys);
  size_t cap = 4;
  while (cap < keys_.size() * 2) cap <<= 1;
  slots_.assign(cap, -1);
  hashes_.resize(keys_.size());
  for (size_t i = 0; i < keys_.size(); i++) {
    hashes_[i] = HashOf(keys_[i]);
    size_t s = hashes_[i] & (cap - 1);
    for (; slots_[s] >= 0; s = (s + 1) & (cap - 1))
      if (hashes_[slots_[s]] == hashes_[i] && keys_[slots_[s]] == keys_[i]) return false;
    slots_[s] = static_cast<int32_t>(i);
  }
  return true;
}

int32_t StringIndex::Find(const uint8_t* p, size_t n, bool fold) const {
  if (keys_.empty()) return -1;
  const uint32_t h = Hash(p, n, fold);
  const size_t mask = slots_.size() - 1;
  for (size_t s = h & mask;; s = (s + 1) & mask) {
    const int32_t k = slots_[s];
    if (k < 0) return -1;
    if (hashes_[k] == h && Same(p, n, keys_[k], fold)) return k;
  }
}

bool ParseRouteTable(const uint8_t* p, size_t len, RouteTable* out, std::string* error) {
  Reader r{p, len, 0, error};
  if (len < 4 || std::memcmp(p, "PRT2", 4) != 0) return r.Fail("not a route table");
  r.at = 4;
  uint32_t routes, n;
  if (!r.Count(&routes, 1)) return false;
  out->candidate.assign(p + r.at, p + r.at + routes);
  r.at += routes;
  for (uint8_t b : out->candidate)
    if (b > 1) return r.Fail("bad candidate bit");
  if (!r.Count(&n, 16)) return false;
  out->tables.resize(n);
  for (RoutePathTable& t : out->tables)
    if (!r.Table(&t, routes)) return false;
  const uint32_t tables = n;
  if (!r.Count(&n, 8)) return false;
  std::vector<std::string> hosts(n);
  out->host_tables.resize(n);
  for (uint32_t k = 0; k < n; k++) {
    if (!r.Str(&hosts[k]) || !r.U32(&out->host_tables[k])) return false;
    if (out->host_tables[k] >= tables) return r.Fail("bad table index");
  }
  if (!out->hosts.Build(std::move(hosts))) return r.Fail("host twice");
  if (!r.Count(&n, 8)) return false;
  out->wildcards.resize(n);
  for (RouteWildcard& w : out->wildcards) {
    if (!r.Str(&w.suffix) || !r.U32(&w.table)) return false;
    if (w.table >= tables) return r.Fail("bad table index");
  }
  uint32_t any;
  if (!r.U32(&any)) return false;
  if (any != 0xffffffffu && any >= tables) return r.Fail("bad table index");
  out->any_host = any == 0xffffffffu ? -1 : static_cast<int32_t>(any);
  if (r.at != len) return r.Fail("bytes after the table");
  return true;
}

RouteMatch MatchRoute(const RouteTable& t, const uint8_t* host, size_t host_len, const uint8_t* path, size_t path_len, const uint8_t* method, size_t method_len) {
  RouteMatch m;
  if (!Ascii(host, host_len) || !Ascii(path, path_len) || !Ascii(method, method_len)) return m;
  if (path_len >= kAcmeLen && std::memcmp(path, kAcme, kAcmeLen) == 0) return m;
  const RouteCandidate* c = nullptr;
  RouteVerdict v = RouteVerdict::kNoRoute;
  if (host_len > 0) {
    // "example.com." names the same host as "example.com" (one dot, as router.ts drops it)
    if (host[host_len - 1] == '.') host_len--;
    const int32_t k = t.hosts.Find(host, host_len, true);
    if (k >= 0) v = MatchPath(t.tables[t.host_tables[k]], path, path_len, method, method_len, &c);
    for (size_t w = 0; v == RouteVerdict::kNoRoute && w < t.wildcards.size(); w++) {
      const std::string& s = t.wildcards[w].suffix;
      if (host_len > s.size() && Same(host + host_len - s.size(), s.size(), s, true))
        v = MatchPath(t.tables[t.wildcards[w].table], path, path_len, method, method_len, &c);
    }
  }
  if (v == RouteVerdict::kNoRoute && t.any_host >= 0) v = MatchPath(t.tables[t.any_host], path, path_len, method, method_len, &c);
  m.verdict = v;
  if (v == RouteVerdict::kRoute) {
    m.route = c->route;
    m.candidate = t.candidate[c->route] != 0;
  }
  return m;
}

}  // namespace portico::rq
