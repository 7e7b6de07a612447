// See fcgi-request.h. Pure: no sockets, no N-API.
#include "fcgi-request.h"

#include <cstring>

namespace portico::fq {
namespace {

using hs::EqLower;
using hs::Field;

constexpr uint8_t kVersion = 1;
constexpr uint8_t kBeginRequest = 1;
constexpr uint8_t kParams = 4;
constexpr uint8_t kStdin = 5;
constexpr size_t kHeaderLen = 8;
constexpr size_t kMaxContent = 0xffff;

// The standard names, in the order of the k* bits.
const char* const kStandard[] = {"QUERY_STRING", "REQUEST_METHOD", "CONTENT_TYPE", "CONTENT_LENGTH", "REQUEST_URI", "SERVER_PROTOCOL", "REQUEST_SCHEME",
                                 "REMOTE_ADDR", "REMOTE_PORT", "SERVER_ADDR", "SERVER_PORT", "SERVER_NAME", "HTTPS"};

void PutHeader(std::string* out, uint8_t type, uint16_t id, size_t length) {
  const char h[kHeaderLen] = {static_cast<char>(kVersion), static_cast<char>(type), static_cast<char>(id >> 8), static_cast<char>(id & 0xff),
                              static_cast<char>(length >> 8), static_cast<char>(length & 0xff), 0, 0};
  out->append(h, kHeaderLen);
}

// §3.4: a length below 128 in one byte, else four with the top bit set (fastcgi.ts lengthChars)
void PutLength(std::string* out, size_t n) {
  if (n < 128) {
    out->push_back(static_cast<char>(n));
    return;
  }
  const char b[4] = {static_cast<char>(((n >> 24) & 0x7f) | 0x80), static_cast<char>((n >> 16) & 0xff), static_cast<char>((n >> 8) & 0xff), static_cast<char>(n & 0xff)};
  out->append(b, 4);
}

void Pair(std::string* out, const char* name, size_t nl, const char* value, size_t vl) {
  PutLength(out, nl);
  PutLength(out, vl);
  out->append(name, nl);
  out->append(value, vl);
}

void Pair(std::string* out, const char* name, const std::string& value) {
  Pair(out, name, std::strlen(name), value.data(), value.size());
}

// fastcgi-params.ts CGI_HEADER_NAME: letters, digits and `-` (nginx ignore_invalid_headers; `_` refused)
bool CgiName(const uint8_t* p, size_t a, size_t b) {
  for (size_t k = a; k < b; k++) {
    const uint8_t c = p[k];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-')) return false;
  }
  return true;
}

// fastcgi-params.ts SKIPPED but content-type (CONTENT_TYPE's own): never sent as HTTP_*
bool Skipped(const uint8_t* p, size_t a, size_t b) {
  switch (b - a) {
    case 2:
      return EqLower(p, a, b, "te", 2);
    case 5:
      return EqLower(p, a, b, "proxy", 5);
    case 7:
      return EqLower(p, a, b, "upgrade", 7);
    case 10:
      return EqLower(p, a, b, "connection", 10) || EqLower(p, a, b, "keep-alive", 10);
    case 14:
      return EqLower(p, a, b, "content-length", 14) || EqLower(p, a, b, "http2-settings", 14);
    case 16:
      return EqLower(p, a, b, "proxy-connection", 16);
    case 17:
      return EqLower(p, a, b, "transfer-encoding", 17);
  }
  return false;
}

// fastcgi-params.ts FORWARDING: passed on from a trusted peer only
bool Forwarding(const uint8_t* p, size_t a, size_t b) {
  switch (b - a) {
    case 9:
      return EqLower(p, a, b, "x-real-ip", 9) || EqLower(p, a, b, "forwarded", 9);
    case 15:
      return EqLower(p, a, b, "x-forwarded-for", 15);
    case 16:
      return EqLower(p, a, b, "x-forwarded-host", 16) || EqLower(p, a, b, "x-forwarded-port", 16);
    case 17:
      return EqLower(p, a, b, "x-forwarded-proto", 17);
  }
  return false;
}

// "HTTP_" + the name upper-cased, `-` as `_`
void CgiText(const uint8_t* p, size_t a, size_t b, std::string* out) {
  out->append("HTTP_", 5);
  for (size_t k = a; k < b; k++) {
    const uint8_t c = p[k];
    out->push_back(c == '-' ? '_' : (c >= 'a' && c <= 'z') ? static_cast<char>(c - 32) : static_cast<char>(c));
  }
}

// The CGI name of p[a..b) is one of `names` (route params of the HTTP_* form)
bool Overridden(const uint8_t* p, size_t a, size_t b, const std::vector<std::string>& names) {
  for (const std::string& s : names) {
    if (s.size() != 5 + (b - a)) continue;
    bool same = true;
    for (size_t k = a; k < b && same; k++) {
      const uint8_t c = p[k];
      const char u = c == '-' ? '_' : (c >= 'a' && c <= 'z') ? static_cast<char>(c - 32) : static_cast<char>(c);
      same = s[5 + (k - a)] == u;
    }
    if (same) return true;
  }
  return false;
}

// What a field becomes: 0 not sent, 1 sent as HTTP_*, 2 Content-Type (fastcgi-params.ts headerKind)
int Kind(const uint8_t* p, const Field& f, const Plan& plan, bool trusted) {
  if (f.ne - f.ns == 12 && EqLower(p, f.ns, f.ne, "content-type", 12)) return 2;
  if (!CgiName(p, f.ns, f.ne) || Skipped(p, f.ns, f.ne)) return 0;
  if (!trusted && Forwarding(p, f.ns, f.ne)) return 0;
  if (!plan.http_over.empty() && Overridden(p, f.ns, f.ne, plan.http_over)) return 0;
  return 1;
}

void Text(std::string* out, int v) {
  out->assign(std::to_string(v));
}

}  // namespace

Plan MakePlan(std::string fixed, const std::vector<std::string>& overridden, bool per_request) {
  Plan plan;
  plan.fixed = std::move(fixed);
  plan.per_request = per_request;
  for (const std::string& name : overridden) {
    for (uint32_t k = 0; k < 13; k++)
      if (name == kStandard[k]) plan.over |= 1u << k;
    if (name.size() > 5 && name.compare(0, 5, "HTTP_") == 0) plan.http_over.push_back(name);
  }
  return plan;
}

bool MakeConn(const rq::Client& remote, int remote_port, const rq::Client& local, int server_port, bool https, bool trusted_peer, Conn* out) {
  if (!rq::AddressText(remote, &out->remote_addr) || !rq::AddressText(local, &out->server_addr)) return false;
  Text(&out->remote_port, remote_port);
  Text(&out->server_port, server_port);
  out->https = https;
  out->trusted_peer = trusted_peer;
  return true;
}

bool Records(const uint8_t* p, size_t len, const rq::Limits& limits, const Plan& plan, const Conn& conn, const char* script, size_t script_len, uint16_t request_id, bool keep_conn,
             rq::Head* h, std::string* out) {
  if (plan.per_request || !rq::Scan(p, len, limits, h, true)) return false;
  const bool trusted = conn.trusted_peer;
  // CONTENT_TYPE: the first Content-Type that is not empty; a trusted peer's X-Forwarded-For is realClient's
  int content_type = -1;
  for (int k = 0; k < h->n; k++) {
    const Field& f = h->fields[k];
    const size_t nl = f.ne - f.ns;
    if (content_type < 0 && nl == 12 && f.ve > f.vs && EqLower(p, f.ns, f.ne, "content-type", 12)) content_type = k;
    if (trusted && nl == 15 && EqLower(p, f.ns, f.ne, "x-forwarded-for", 15)) return false;
  }
  const char* const c = reinterpret_cast<const char*>(p);
  const uint32_t over = plan.over;
  out->clear();
  out->reserve(3 * kHeaderLen + 8 + plan.fixed.size() + script_len + 2 * h->used + 256);
  PutHeader(out, kBeginRequest, request_id, 8);
  // the body: role FCGI_RESPONDER (1), flags (FCGI_KEEP_CONN), 5 reserved bytes
  const char begin[8] = {0, 1, static_cast<char>(keep_conn ? 1 : 0), 0, 0, 0, 0, 0};
  out->append(begin, 8);
  const size_t at = out->size();
  PutHeader(out, kParams, request_id, 0);  // its length once the pairs are written
  out->append(plan.fixed);
  if ((over & kQueryString) == 0) {
    const size_t qs = h->query_s < h->target_e ? h->query_s + 1 : h->target_e;
    Pair(out, "QUERY_STRING", 12, c + qs, h->target_e - qs);
  }
  if ((over & kRequestMethod) == 0) Pair(out, "REQUEST_METHOD", 14, h->head_method ? "HEAD" : "GET", h->head_method ? 4 : 3);
  if ((over & kContentType) == 0) {
    if (content_type < 0) Pair(out, "CONTENT_TYPE", 12, "", 0);
    else Pair(out, "CONTENT_TYPE", 12, c + h->fields[content_type].vs, h->fields[content_type].ve - h->fields[content_type].vs);
  }
  if ((over & kContentLength) == 0) Pair(out, "CONTENT_LENGTH", 14, "0", h->length_zero ? 1 : 0);
  out->append(script, script_len);
  if ((over & kRequestUri) == 0) Pair(out, "REQUEST_URI", 11, c + h->target_s, h->target_e - h->target_s);
  if ((over & kServerProtocol) == 0) Pair(out, "SERVER_PROTOCOL", 15, h->minor == 1 ? "HTTP/1.1" : "HTTP/1.0", 8);
  if ((over & kRequestScheme) == 0) Pair(out, "REQUEST_SCHEME", 14, conn.https ? "https" : "http", conn.https ? 5 : 4);
  if ((over & kRemoteAddr) == 0) Pair(out, "REMOTE_ADDR", conn.remote_addr);
  if ((over & kRemotePort) == 0) Pair(out, "REMOTE_PORT", conn.remote_port);
  if ((over & kServerAddr) == 0) Pair(out, "SERVER_ADDR", conn.server_addr);
  if ((over & kServerPort) == 0) Pair(out, "SERVER_PORT", conn.server_port);
  if ((over & kServerName) == 0) {
    // $host: Host's host part, lower-cased (Scan took a non-empty Host, so never the listener's address)
    const size_t n = h->host_name_e - h->host_s;
    PutLength(out, 11);
    PutLength(out, n);
    out->append("SERVER_NAME", 11);
    for (size_t k = h->host_s; k < h->host_name_e; k++) out->push_back(static_cast<char>(hs::Lower(p[k])));
  }
  if (conn.https && (over & kHttps) == 0) Pair(out, "HTTPS", 5, "on", 2);
  // HTTP_* in the order of each name's first field; a repeated name's values joined into its first (RFC 9110 §5.3),
  // Cookie's with "; " (RFC 6265 §5.4)
  for (int k = 0; k < h->n; k++) {
    const Field& f = h->fields[k];
    if (Kind(p, f, plan, trusted) != 1) continue;
    bool seen = false;
    for (int j = 0; j < k && !seen; j++) seen = hs::EqLowerRange(p, h->fields[j].ns, h->fields[j].ne, p, f.ns, f.ne);
    if (seen) continue;
    const bool cookie = f.ne - f.ns == 6 && EqLower(p, f.ns, f.ne, "cookie", 6);
    size_t vl = f.ve - f.vs;
    for (int j = k + 1; j < h->n; j++)
      if (hs::EqLowerRange(p, h->fields[j].ns, h->fields[j].ne, p, f.ns, f.ne)) vl += 2 + (h->fields[j].ve - h->fields[j].vs);
    PutLength(out, 5 + (f.ne - f.ns));
    PutLength(out, vl);
    CgiText(p, f.ns, f.ne, out);
    out->append(c + f.vs, f.ve - f.vs);
    for (int j = k + 1; j < h->n; j++) {
      const Field& g = h->fields[j];
      if (!hs::EqLowerRange(p, g.ns, g.ne, p, f.ns, f.ne)) continue;
      out->append(cookie ? "; " : ", ", 2);
      out->append(c + g.vs, g.ve - g.vs);
    }
  }
  const size_t body = out->size() - at - kHeaderLen;
  if (body == 0) {
    out->resize(at);  // no pairs at all: only the closing record (an empty one would end the stream early)
  } else if (body <= kMaxContent) {
    (*out)[at + 4] = static_cast<char>(body >> 8);
    (*out)[at + 5] = static_cast<char>(body & 0xff);
  } else {
    // past 64 KiB (very large fields): the pairs cut into records of at most kMaxContent bytes each
    const std::string payload = out->substr(at + kHeaderLen);
    out->resize(at);
    for (size_t from = 0; from < body; from += kMaxContent) {
      const size_t n = body - from < kMaxContent ? body - from : kMaxContent;
      PutHeader(out, kParams, request_id, n);
      out->append(payload, from, n);
    }
  }
  PutHeader(out, kParams, request_id, 0);
  PutHeader(out, kStdin, request_id, 0);
  return true;
}

}  // namespace portico::fq
