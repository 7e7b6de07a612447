// See response-head.h. Pure: no sockets, no N-API; io.cc calls it on an armed upstream's first read.
#include "response-head.h"

#include <cstring>

#include "head-scan.h"

namespace portico::rh {
namespace {

using hs::CR;
using hs::EqLower;
using hs::EqLowerRange;
using hs::Field;
using hs::HTAB;
using hs::LF;
using hs::SP;
using hs::ValueByte;

constexpr uint64_t kMaxSafe = 9007199254740991ULL;  // 2^53-1: JS's bound on a Content-Length

struct Token {
  uint32_t s, e;
};

// A head as Scan() read it: the status-line, the fields in order and what the rewrite and the checks need of them.
struct Scanned {
  int status = 0;
  size_t reason_end = 0;  // the status-line up to its CRLF (copied as it came)
  size_t used = 0;        // bytes of the head
  Field fields[kMaxFields];
  int n = 0;
  Token tokens[64];  // Connection-listed names (but host and the framing fields): their fields are dropped
  int ntok = 0;
  bool close = false;
  bool length_seen = false;
  uint64_t length = 0;
  bool upgrade_token = false;  // Connection lists "upgrade"
  int upgrades = 0;            // Upgrade fields, and the last one
  Field upgrade{};
  int accepts = 0;             // Sec-WebSocket-Accept fields, and the last one
  Field accept{};
};

// Reads the head at p[0..len) into `h`. `upgrade`: a 101 (no Content-Length); else a final status with a body (one
// Content-Length at most, checked by the caller). False: not this path's.
bool Scan(const uint8_t* p, size_t len, bool upgrade, Scanned* h) {
  const size_t end = len < kHeadLimit ? len : kHeadLimit;
  // status-line: "HTTP/1.1" SP 3DIGIT SP reason CRLF (a missing final SP, HTTP/1.0 and the rest are JS's)
  if (end < 15 || std::memcmp(p, "HTTP/1.1 ", 9) != 0) return false;
  int status = 0;
  for (size_t i = 9; i < 12; i++) {
    if (p[i] < '0' || p[i] > '9') return false;
    status = status * 10 + (p[i] - '0');
  }
  if (upgrade) {
    if (status != 101) return false;
  } else if (status < 200 || status > 599 || status == 204 || status == 304) {
    // final answers with a body only: 1xx and 101 (interim, upgrades), 204 and 304 (no body) stay JS's
    return false;
  }
  if (p[12] != SP) return false;
  size_t i = 13;
  while (i < end && ValueByte(p[i])) i++;
  h->status = status;
  h->reason_end = i;
  if (i + 1 >= end || p[i] != CR || p[i + 1] != LF) return false;
  i += 2;

  i = hs::FieldLines(p, i, end, kMaxFields, [&](const Field& field) {
    const size_t ns = field.ns, ne = field.ne, vs = field.vs, ve = field.ve;
    h->fields[h->n++] = field;
    const size_t nl = ne - ns;
    if (nl == 14 && EqLower(p, ns, ne, "content-length", 14)) {
      // one, plain digits, within 2^53-1 (JS refuses a second one, equal or not); a 101 with one is JS's
      if (upgrade || h->length_seen || ve == vs) return false;
      h->length_seen = true;
      for (size_t k = vs; k < ve; k++) {
        if (p[k] < '0' || p[k] > '9') return false;
        h->length = h->length * 10 + static_cast<uint64_t>(p[k] - '0');
        if (h->length > kMaxSafe) return false;
      }
    } else if (nl == 17 && EqLower(p, ns, ne, "transfer-encoding", 17)) {
      return false;
    } else if (nl == 7 && EqLower(p, ns, ne, "upgrade", 7)) {
      h->upgrades++;
      h->upgrade = field;
    } else if (nl == 20 && EqLower(p, ns, ne, "sec-websocket-accept", 20)) {
      h->accepts++;
      h->accept = field;
    } else if (nl == 10 && EqLower(p, ns, ne, "connection", 10)) {
      // #connection-option, as http-head.ts readConnection: elements trimmed, empty ones skipped; each names a
      // field to drop, but for host and the framing fields (never hop-by-hop)
      const bool ok = hs::ForEachElement(p, vs, ve, [&](size_t es, size_t ee) {
        if (EqLower(p, es, ee, "close", 5)) h->close = true;
        if (EqLower(p, es, ee, "upgrade", 7)) h->upgrade_token = true;
        if (EqLower(p, es, ee, "host", 4) || EqLower(p, es, ee, "content-length", 14) || EqLower(p, es, ee, "transfer-encoding", 17)) return true;
        if (h->ntok == 64) return false;
        h->tokens[h->ntok++] = Token{static_cast<uint32_t>(es), static_cast<uint32_t>(ee)};
        return true;
      });
      if (!ok) return false;
    }
    return true;
  });
  if (i == 0) return false;
  h->used = i;
  return true;
}

// The status-line and the fields the client gets (the plan's names and the Connection-listed ones dropped), into `out`.
void WriteFields(const uint8_t* p, const Scanned& h, const Plan& plan, size_t reserve, std::string* out) {
  out->clear();
  out->reserve(h.used + reserve + 64);
  out->append(reinterpret_cast<const char*>(p), h.reason_end);
  out->append("\r\n", 2);
  for (int f = 0; f < h.n; f++) {
    const Field& fd = h.fields[f];
    bool drop = hs::NameIn(p, fd.ns, fd.ne, plan.skip);
    for (int t = 0; !drop && t < h.ntok; t++) drop = EqLowerRange(p, fd.ns, fd.ne, p, h.tokens[t].s, h.tokens[t].e);
    if (drop) continue;
    out->append(reinterpret_cast<const char*>(p) + fd.ns, fd.ne - fd.ns);
    out->append(": ", 2);
    out->append(reinterpret_cast<const char*>(p) + fd.vs, fd.ve - fd.vs);
    out->append("\r\n", 2);
  }
}

}  // namespace

bool Rewrite(const uint8_t* p, size_t len, const Plan& plan, const std::string& extra, int conn, Head* head, std::string* out) {
  Scanned h;
  if (!Scan(p, len, false, &h) || !h.length_seen) return false;
  WriteFields(p, h, plan, extra.size(), out);
  out->append("Content-Length: ");
  out->append(std::to_string(h.length));
  out->append("\r\n", 2);
  out->append(extra);
  if (conn == kConnClose) out->append("Connection: close\r\n");
  else if (conn == kConnKeepAlive) out->append("Connection: keep-alive\r\n");
  out->append("\r\n", 2);
  head->status = h.status;
  head->used = h.used;
  head->content_length = h.length;
  head->keep_alive = !h.close;
  return true;
}

bool RewriteUpgrade(const uint8_t* p, size_t len, const Plan& plan, const std::string& extra, const std::string& accept, Head* head, std::string* out) {
  Scanned h;
  if (!Scan(p, len, true, &h)) return false;
  // forward.ts #onUpgrade: Upgrade (one field: JS joins several) is websocket, listed in Connection; the accept
  // value (one field: JS reads the first) is the one the client's key asks for, byte for byte
  if (!h.upgrade_token || h.upgrades != 1 || !EqLower(p, h.upgrade.vs, h.upgrade.ve, "websocket", 9)) return false;
  if (h.accepts != 1 || h.accept.ve - h.accept.vs != accept.size() || std::memcmp(p + h.accept.vs, accept.data(), accept.size()) != 0) return false;
  WriteFields(p, h, plan, extra.size(), out);
  out->append(extra);
  out->append("Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
  head->status = 101;
  head->used = h.used;
  head->content_length = 0;
  head->keep_alive = false;
  return true;
}

}  // namespace portico::rh
