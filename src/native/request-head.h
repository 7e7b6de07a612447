// The common HTTP/1.x request head, read and rewritten in C++ (request-head.cc): the first building block of a request
// side without JavaScript per exchange (native-notes/request.md). Not wired into the request path yet: io.cc only
// exports it for the differential tests (requestHeadRewrite).
// Scan is a strict subset of src/wire/http-head.ts parseRequestHead meaning the same, with nothing for
// src/route/decide.ts to normalize: "GET" or "HEAD", an origin-form target whose path has no `%`, `\`, `//` or
// segment starting with `.` (the query as it came), "HTTP/1.1" or "HTTP/1.0", tchar names, field-vchar/SP/HTAB
// values, exactly one valid non-empty Host, at most one Content-Length whose value is zero, Connection of close /
// keep-alive tokens only, no Transfer-Encoding, Upgrade, Expect, TE, Trailer, Forwarded, X-Forwarded-* or X-Real-IP
// (so no body, no tunnel, no interim answer and no forwarding trust applies), all within the JS limits. Anything else
// is "not mine": the bytes stay JavaScript's, so every refusal and every other branch is the JS parser's.
// Rewrite is src/handlers/rewrite.ts buildRequestHead's for such a head on a route whose request side is plain or
// has fixed lines: the request line (the route's prefix stripped), the kept fields, Content-Length: 0 when one was
// sent, Portico's forwarding fields from the client's address, scheme and listener port, the request id, the route's
// lines (given by JS), Connection: keep-alive for HTTP/1.0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "head-scan.h"

namespace portico::rq {

// Fields a head may have here (storage); a config allowing more is served up to this many, the rest is JS's.
constexpr int kMaxFields = 256;

// The config's request limits (src/config/schema.ts limits: header_size, uri_size, headers).
struct Limits {
  size_t head_size = 32 * 1024;
  size_t uri_size = 8 * 1024;
  int fields = 100;
};

// The forwarding lines buildRequestHead writes by default, and the request id: a route that removes or sets one of
// these names owns it (its line is not written).
constexpr uint32_t kOwnFor = 1;         // x-forwarded-for
constexpr uint32_t kOwnProto = 2;       // x-forwarded-proto
constexpr uint32_t kOwnHost = 4;        // x-forwarded-host
constexpr uint32_t kOwnPort = 8;        // x-forwarded-port
constexpr uint32_t kOwnRealIp = 16;     // x-real-ip
constexpr uint32_t kOwnForwarded = 32;  // forwarded
constexpr uint32_t kOwnRequestId = 64;  // x-request-id

// A route's request side, computed by JS once per route.
struct Plan {
  std::vector<std::string> skip;  // lower-case names dropped (rewrite.ts planOf: hop-by-hop, framing, the route's own)
  std::string strip_prefix;       // router.ts CompiledRoute.stripPrefix ('' when none)
  uint32_t own = 0;               // kOwn* bits
  bool forwarded = false;         // forwarding.forwarded: Portico's RFC 7239 element
  std::string extra;              // the route's `set` lines (fixed values), each ending in CRLF
};

// The kOwn* bits of the lower-case names a route removes or sets.
uint32_t OwnBits(const std::vector<std::string>& own);

// What the request's forwarding lines are made of (connection.ts #setVars).
struct Client {
  int family = 0;  // AF_INET or AF_INET6 (anything else: not mine)
  uint8_t addr[16] = {0};
  uint32_t scope_id = 0;
  bool https = false;
  int server_port = 0;  // the listener's port
  bool has_request_id = false;
  std::string request_id;  // log.request_id: the X-Request-Id sent upstream (http/request-id.ts chose it)
};

struct Head {
  bool head_method = false;  // HEAD, else GET
  int minor = 1;
  size_t used = 0;  // bytes of the head (what follows is the next request's)
  bool keep_alive = false;
  bool length_zero = false;  // a Content-Length (of value 0) was sent
  uint32_t target_s = 0, query_s = 0, target_e = 0;  // path p[target_s..query_s), query p[query_s..target_e) with its '?'
  uint32_t host_s = 0, host_name_e = 0, host_e = 0;  // Host as received p[host_s..host_e), its host part up to host_name_e
  bool close_token = false;       // Connection lists close: a field named Close is dropped (rewrite.ts connTokens)
  bool keep_alive_token = false;  // Connection lists keep-alive
  hs::Field fields[kMaxFields];
  int n = 0;
  // Everything but the field storage (only its first n entries mean anything): a head is ~4 KiB, reset per read.
  void Reset() {
    head_method = false;
    minor = 1;
    used = 0;
    keep_alive = false;
    length_zero = false;
    target_s = query_s = target_e = 0;
    host_s = host_name_e = host_e = 0;
    close_token = keep_alive_token = false;
    n = 0;
  }
};

// Reads the head at p[0..len) into `h`. False: not this path's (the head is incomplete, or outside the subset).
// `forwarding`: Forwarded, X-Real-IP and X-Forwarded-* are read as any other field (a reader that applies the trust
// policy itself: fcgi-request.cc); without it they make the head JS's (Rewrite, whose trust rules are rewrite.ts's).
bool Scan(const uint8_t* p, size_t len, const Limits& limits, Head* h, bool forwarding = false);

// The client's address as connection.ts remoteAddr has it (Node's text, an IPv4-mapped address as IPv4). False:
// not an address this path formats (no family, or link-local: Node adds its zone).
bool AddressText(const Client& c, std::string* out);

// Scan, then the head buildRequestHead sends upstream, into `out` (replaced). False: not this path's (nothing in `h`
// or `out` is meaningful then); also when the path does not start with the plan's prefix on a segment boundary.
bool Rewrite(const uint8_t* p, size_t len, const Limits& limits, const Plan& plan, const Client& client, Head* h, std::string* out);

}  // namespace portico::rq
