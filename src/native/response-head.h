// The common HTTP/1.1 response head, read and rewritten in C++ (response-head.cc) so that io.cc can relay an
// upstream's answer to its client without JavaScript per exchange. A strict subset of what src/wire/http-head.ts
// parseResponseHead accepts, meaning the same: "HTTP/1.1 DDD reason", a final status that carries a body (200-599
// but 204 and 304), tchar names, field values of field-vchar/SP/HTAB, exactly one Content-Length of plain digits,
// no Transfer-Encoding, the whole head in the bytes given and within the JS limits. Anything else is "not mine":
// the bytes go to JavaScript untouched, so every refusal stays the JS parser's.
// The rewrite is src/handlers/rewrite.ts buildResponseHead's for a route whose response side is plain: hop-by-hop,
// framing, route-owned and Connection-listed fields dropped, Content-Length written from the value read, the
// route's own lines (computed by JS when it armed the exchange) appended, then the Connection line JS chose.
// A WebSocket upgrade's 101 has its own check and rewrite (RewriteUpgrade): forward.ts #onUpgrade's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace portico::rh {

// JS's RESPONSE_HEAD_LIMITS (src/handlers/forward.ts): head bytes and header fields.
constexpr size_t kHeadLimit = 64 * 1024;
constexpr int kMaxFields = 200;

// The Connection line of the rewritten head (forward.ts #onResponseHead: '' / 'close' / 'keep-alive').
constexpr int kConnNone = 0;
constexpr int kConnClose = 1;
constexpr int kConnKeepAlive = 2;

// A route's response side: the lower-case field names it drops (rewrite.ts planOf: hop-by-hop and framing fields,
// and the names its rules remove or set).
struct Plan {
  std::vector<std::string> skip;
};

struct Head {
  int status = 0;
  size_t used = 0;              // bytes of the head (the body starts there)
  uint64_t content_length = 0;
  bool keep_alive = false;      // the upstream may be reused after the body (HTTP/1.1 without Connection: close)
};

// Reads the head at p[0..len) and writes the client's head into `out` (replaced). False: not this path's (nothing
// in `head` or `out` is meaningful then). `extra`: header lines ending in CRLF, appended after Content-Length.
bool Rewrite(const uint8_t* p, size_t len, const Plan& plan, const std::string& extra, int conn, Head* head, std::string* out);

// The backend's answer to a WebSocket upgrade (forward.ts #onUpgrade, then buildResponseHead with 'upgrade'), read at
// p[0..len) and rewritten into `out`: "HTTP/1.1 101 reason", the fields as for Rewrite (same rules, same drops; no
// Content-Length or Transfer-Encoding at all), exactly one Upgrade field whose value is websocket (any case), listed
// in Connection, exactly one Sec-WebSocket-Accept equal to `accept` (the value the client's key asks for). The client
// gets the fields the plan keeps, `extra`, then "Connection: Upgrade" and "Upgrade: websocket". False: not this
// path's (JS then reads the bytes and judges them, wrong accept key included). head->used: where the tunnel's
// bytes start.
bool RewriteUpgrade(const uint8_t* p, size_t len, const Plan& plan, const std::string& extra, const std::string& accept, Head* head, std::string* out);

}  // namespace portico::rh
