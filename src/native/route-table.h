// The config's routes as a table the addon can match without JavaScript (route-table.cc): step 2 of the request side
// in C++ (native-notes/request.md). Not wired into the request path yet: io.cc only exports it for the differential
// tests and the benchmark (routeTableCompile, routeTableMatch).
// JS compiles it from a sealed src/route/router.ts Router (src/route/native-routes.ts, Router.layout) into bytes, once
// per config; ParseRouteTable reads them into a RouteTable that is never changed afterwards (a reload compiles a new
// one; the old one goes when its last holder lets it go). MatchRoute is Router.route for a request that is not a
// WebSocket handshake, over the host as scanAuthority reads it, the normalized path and the method: exact hosts, then
// `*.suffix` wildcards longest first, then the host-less routes, falling through from one class to the next; within a
// class `path_exact`, `path_regex`, prefixes longest first on a segment boundary, routes without a path; in each list
// the first candidate whose methods fit (tie order: JS sorted them). A `path_regex` JS proved literal (`\.php$`,
// `^/api/`, `^/x$`, `/x`: src/route/literal-regex.ts) is matched here as a suffix, prefix, whole path or substring.
// Whatever it cannot be sure of is "not mine": any other `path_regex` reached without an earlier hit, when one of its
// routes takes the method (no regex engine equal to V8's here), a path JS's connection may answer before routing
// (ACME HTTP-01), bytes outside ASCII.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace portico::rq {

// A path_regex as src/route/literal-regex.ts classified it: a literal it matches as V8's RegExp.test does on an ASCII
// path, or kOpaque (V8 decides: the class is JS's from this regex on, when one of its routes takes the method).
enum class RegexKind : uint8_t {
  kOpaque = 0,
  kExact = 1,     // ^text$
  kPrefix = 2,    // ^text
  kSuffix = 3,    // text$
  kContains = 4,  // text anywhere
};

// One route under one path condition: its index in the config (file order) and its method list.
struct RouteCandidate {
  uint32_t route = 0;
  bool any_method = true;            // no match.method
  std::vector<std::string> methods;  // compared exactly (GET does not imply HEAD)
};

// Strings to small integers, by open addressing: the exact hosts of a table and the exact paths of a class. Keys
// are stored as JS gave them (hosts lower-case already); a lookup can fold ASCII upper case in its key.
class StringIndex {
 public:
  // The value of keys[i] is i; false when a key comes twice.
  bool Build(std::vector<std::string> keys);
  // The value of p[0..n) (ASCII-lower-cased first when `fold`), or -1.
  int32_t Find(const uint8_t* p, size_t n, bool fold) const;
  size_t size() const { return keys_.size(); }

 private:
  std::vector<std::string> keys_;
  std::vector<int32_t> slots_;  // index into keys_, -1 empty; a power of two, at least twice the keys
  std::vector<uint32_t> hashes_;
};

struct RoutePrefix {
  std::string prefix;
  bool boundary = true;  // the prefix does not end in '/': the next path byte must be '/' or the end
  std::vector<RouteCandidate> candidates;
};

struct RouteRegex {
  RegexKind kind = RegexKind::kOpaque;
  std::string text;  // ASCII; a letter taken in both cases is stored lower-case
  std::string fold;  // as long as text: 0x20 where a letter is taken in both cases, else 0 (path byte | fold == text byte)
  std::vector<RouteCandidate> candidates;
};

// The routes of one host class (an exact host, a wildcard suffix, or no host), in Router's match order.
struct RoutePathTable {
  StringIndex exact;                                     // path_exact -> exact_lists
  std::vector<std::vector<RouteCandidate>> exact_lists;  // tie order
  std::vector<RouteRegex> regexes;                       // path_regex conditions in file order
  std::vector<RoutePrefix> prefixes;                     // longest first
  std::vector<RouteCandidate> any;                       // no path condition
};

struct RouteWildcard {
  std::string suffix;  // ".example.com" for "*.example.com"
  uint32_t table = 0;
};

struct RouteTable {
  std::vector<uint8_t> candidate;  // per route: its request side can be handed over (computed by JS)
  std::vector<RoutePathTable> tables;
  StringIndex hosts;                    // exact host -> host_tables
  std::vector<uint32_t> host_tables;
  std::vector<RouteWildcard> wildcards;  // longest suffix first
  int32_t any_host = -1;                 // the host-less routes' table, or -1
};

enum class RouteVerdict : uint8_t {
  kRoute,    // this route (Router.route's decision for it)
  kNoRoute,  // no route: Router.route's ROUTE_NOT_FOUND
  kNotMine,  // JS must decide
};

struct RouteMatch {
  RouteVerdict verdict = RouteVerdict::kNotMine;
  uint32_t route = 0;
  bool candidate = false;  // the route's candidate bit
};

// The table from the bytes src/route/native-routes.ts writes. False (and *error set) on anything malformed: every
// count and index is checked against what remains, so no input reads out of bounds.
bool ParseRouteTable(const uint8_t* p, size_t len, RouteTable* out, std::string* error);

// Router.route(host, method, path) for a request that is not a WebSocket handshake. `host`: the Host's host part as
// scanAuthority reads it (upper case allowed: folded here; empty: no host), port excluded; `path`: normalized, no
// query. Any byte above 0x7f in the three: not mine.
RouteMatch MatchRoute(const RouteTable& t, const uint8_t* host, size_t host_len, const uint8_t* path, size_t path_len, const uint8_t* method, size_t method_len);

}  // namespace portico::rq
