// See request-head.h. Pure: no sockets, no N-API.
#include "request-head.h"

#include "ip-text.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>

namespace portico::rq {
namespace {

using hs::CR;
using hs::EqLower;
using hs::Field;
using hs::LF;
using hs::SP;

// http-head.ts HOST_CHAR: a DNS-style name or IPv4 (unreserved characters only)
bool HostChar(uint8_t c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '.' || c == '_' || c == '~';
}

// http-head.ts IPV6_CHAR: inside an IP-literal's brackets
bool Ipv6Char(uint8_t c) {
  return (c >= '0' && c <= ':') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f') || c == '.';
}

// uri-host [ ":" port ] over p[a..b), as http-head.ts scanAuthority (port optional); the host part's end in *name_e.
bool Authority(const uint8_t* p, size_t a, size_t b, size_t* name_e) {
  size_t i = a;
  if (i >= b) return false;
  if (p[i] == '[') {
    i++;
    int colons = 0;
    while (i < b && Ipv6Char(p[i])) colons += p[i++] == ':';
    if (i >= b || p[i] != ']' || colons < 2) return false;
    i++;
  } else {
    while (i < b && HostChar(p[i])) i++;
    if (i == a) return false;
  }
  *name_e = i;
  if (i == b) return true;
  if (p[i] != ':') return false;
  i++;
  if (i == b) return true;  // RFC 3986: port = *DIGIT, "host:" is the default port
  if (b - i > 5) return false;
  uint32_t port = 0;
  for (; i < b; i++) {
    if (p[i] < '0' || p[i] > '9') return false;
    port = port * 10 + (p[i] - '0');
  }
  return port <= 65535;
}

// The request-line at p[0..end): "GET" / "HEAD", an origin-form target that src/wire/path.ts normalizePath returns as
// it is, "HTTP/1.1" / "HTTP/1.0", CRLF. The index after the CRLF, or 0.
size_t RequestLine(const uint8_t* p, size_t end, size_t uri_size, Head* h) {
  size_t i;
  if (end >= 4 && std::memcmp(p, "GET ", 4) == 0) {
    i = 4;
  } else if (end >= 5 && std::memcmp(p, "HEAD ", 5) == 0) {
    i = 5;
    h->head_method = true;
  } else {
    return 0;  // other methods, leading empty lines, anything else
  }
  const size_t ts = i;
  if (i >= end || p[i] != '/') return 0;  // absolute-form, asterisk-form: JS's
  const size_t stop = end < ts + uri_size ? end : ts + uri_size;
  size_t q = 0;
  uint8_t prev = '/';
  for (i++; i < stop; i++) {
    const uint8_t c = p[i];
    // http-head.ts TARGET_CHAR: visible ASCII but '#'; the byte after it must be the SP (else 414, 400 or more: JS's)
    if (c <= 0x20 || c >= 0x7f || c == '#') break;
    if (q != 0) continue;  // the query goes upstream as it came
    if (c == '?') {
      q = i;
      continue;
    }
    // normalizePath's fast path: a path without these is returned as it is (no decoding, no dot segment, no merge)
    if (c == '%' || c == '\\' || (prev == '/' && (c == '/' || c == '.'))) return 0;
    prev = c;
  }
  if (i >= end || p[i] != SP) return 0;
  h->target_s = static_cast<uint32_t>(ts);
  h->query_s = static_cast<uint32_t>(q != 0 ? q : i);
  h->target_e = static_cast<uint32_t>(i);
  i++;
  if (i + 10 > end || std::memcmp(p + i, "HTTP/1.", 7) != 0 || (p[i + 7] != '1' && p[i + 7] != '0')) return 0;
  h->minor = p[i + 7] - '0';
  if (p[i + 8] != CR || p[i + 9] != LF) return 0;
  return i + 10;
}

// Names whose field makes the head JS's: framing and body (Transfer-Encoding; Expect's interim answer), a tunnel
// (Upgrade), hop-by-hop negotiation JS would drop but this path does not judge (TE, Trailer), and unless
// `forwarding`, forwarding claims that a trust policy would read (Forwarded, X-Real-IP and every X-Forwarded-*).
bool Refused(const uint8_t* p, size_t ns, size_t ne, bool forwarding) {
  switch (ne - ns) {
    case 2:
      return EqLower(p, ns, ne, "te", 2);
    case 6:
      return EqLower(p, ns, ne, "expect", 6);
    case 7:
      return EqLower(p, ns, ne, "upgrade", 7) || EqLower(p, ns, ne, "trailer", 7);
    case 9:
      return !forwarding && (EqLower(p, ns, ne, "forwarded", 9) || EqLower(p, ns, ne, "x-real-ip", 9));
    case 17:
      if (EqLower(p, ns, ne, "transfer-encoding", 17)) return true;
      break;
  }
  return !forwarding && ne - ns >= 12 && EqLower(p, ns, ns + 12, "x-forwarded-", 12);
}

void Append(std::string* out, const uint8_t* p, size_t a, size_t b) {
  out->append(reinterpret_cast<const char*>(p) + a, b - a);
}

}  // namespace

bool Scan(const uint8_t* p, size_t len, const Limits& limits, Head* h, bool forwarding) {
  h->Reset();
  // parseRequestHead reads within header_size: a head that ends past it is a 431, JS's
  const size_t end = len < limits.head_size ? len : limits.head_size;
  size_t i = RequestLine(p, end, limits.uri_size, h);
  if (i == 0) return false;
  bool host = false;
  i = hs::FieldLines(p, i, end, limits.fields < kMaxFields ? limits.fields : kMaxFields, [&](const Field& f) {
    h->fields[h->n++] = f;
    const size_t nl = f.ne - f.ns;
    if (nl == 4 && EqLower(p, f.ns, f.ne, "host", 4)) {
      // exactly one (RFC 9112 §3.2), not empty (then $host is the listener's address: JS's), a valid authority
      size_t name_e = 0;
      if (host || f.ve == f.vs || !Authority(p, f.vs, f.ve, &name_e)) return false;
      host = true;
      h->host_s = f.vs;
      h->host_name_e = static_cast<uint32_t>(name_e);
      h->host_e = f.ve;
    } else if (nl == 14 && EqLower(p, f.ns, f.ne, "content-length", 14)) {
      // one, of value zero (no body); JS writes it back as "0"
      if (h->length_zero || f.ve == f.vs) return false;
      for (size_t k = f.vs; k < f.ve; k++)
        if (p[k] != '0') return false;
      h->length_zero = true;
    } else if (nl == 10 && EqLower(p, f.ns, f.ne, "connection", 10)) {
      // close and keep-alive only: any other token names a field to drop or asks for an upgrade
      return hs::ForEachElement(p, f.vs, f.ve, [&](size_t es, size_t ee) {
        if (EqLower(p, es, ee, "close", 5)) h->close_token = true;
        else if (EqLower(p, es, ee, "keep-alive", 10)) h->keep_alive_token = true;
        else return false;
        return true;
      });
    } else if (Refused(p, f.ns, f.ne, forwarding)) {
      return false;
    }
    return true;
  });
  if (i == 0) return false;
  if (!host) return false;
  h->used = i;
  h->keep_alive = h->minor == 1 ? !h->close_token : h->keep_alive_token && !h->close_token;  // RFC 9112 §9.3
  return true;
}

uint32_t OwnBits(const std::vector<std::string>& own) {
  static const char* const kNames[] = {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "x-real-ip", "forwarded", "x-request-id"};
  uint32_t bits = 0;
  for (const std::string& name : own)
    for (uint32_t k = 0; k < 7; k++)
      if (name == kNames[k]) bits |= 1u << k;
  return bits;
}

bool AddressText(const Client& c, std::string* out) {
  char text[INET6_ADDRSTRLEN] = {0};
  if (c.family == AF_INET) {
    out->assign(text, Ipv4Text(c.addr, text));
    return true;
  }
  if (c.family != AF_INET6) return false;
  in6_addr a;
  std::memcpy(&a, c.addr, 16);
  // Node writes a link-local address with its zone ("fe80::1%eth0"): JS's
  if (IN6_IS_ADDR_LINKLOCAL(&a)) return false;
  // connection.ts drops "::ffff:" from an IPv4-mapped address: the IPv4 text
  if (IN6_IS_ADDR_V4MAPPED(&a)) {
    out->assign(text, Ipv4Text(c.addr + 12, text));
    return true;
  }
  inet_ntop(AF_INET6, &a, text, sizeof text);
  out->assign(text);
  return true;
}

bool Rewrite(const uint8_t* p, size_t len, const Limits& limits, const Plan& plan, const Client& client, Head* h, std::string* out) {
  std::string addr;
  if (!AddressText(client, &addr) || !Scan(p, len, limits, h)) return false;
  // router.ts strip_prefix: the route matched the prefix on a segment boundary (else the route is not this one)
  size_t ps = h->target_s;
  const size_t pe = h->query_s;
  const size_t sn = plan.strip_prefix.size();
  if (sn > 0) {
    if (pe - ps < sn || std::memcmp(p + ps, plan.strip_prefix.data(), sn) != 0 || (pe - ps > sn && p[ps + sn] != '/')) return false;
    ps += sn;
  }
  const char* scheme = client.https ? "https" : "http";
  out->clear();
  out->reserve(h->used + plan.extra.size() + 256);
  out->append(h->head_method ? "HEAD " : "GET ");
  if (ps == pe) out->push_back('/');
  Append(out, p, ps, pe);
  Append(out, p, h->query_s, h->target_e);
  out->append(h->minor == 1 ? " HTTP/1.1\r\n" : " HTTP/1.0\r\n");
  for (int k = 0; k < h->n; k++) {
    const Field& f = h->fields[k];
    if (hs::NameIn(p, f.ns, f.ne, plan.skip)) continue;
    // the client's Connection tokens name fields to drop; its X-Request-Id gives way to the one Portico chose
    if (h->close_token && EqLower(p, f.ns, f.ne, "close", 5)) continue;
    if (h->keep_alive_token && EqLower(p, f.ns, f.ne, "keep-alive", 10)) continue;
    if (client.has_request_id && EqLower(p, f.ns, f.ne, "x-request-id", 12)) continue;
    Append(out, p, f.ns, f.ne);
    out->append(": ", 2);
    Append(out, p, f.vs, f.ve);
    out->append("\r\n", 2);
  }
  if (h->length_zero) out->append("Content-Length: 0\r\n");
  // the defaults with no client copies (Scan refused those), in buildRequestHead's order
  const uint32_t own = plan.own;
  if ((own & kOwnFor) == 0) out->append("X-Forwarded-For: ").append(addr).append("\r\n");
  if ((own & kOwnProto) == 0) out->append("X-Forwarded-Proto: ").append(scheme).append("\r\n");
  if ((own & kOwnHost) == 0) {
    out->append("X-Forwarded-Host: ");
    Append(out, p, h->host_s, h->host_e);
    out->append("\r\n");
  }
  if ((own & kOwnPort) == 0) out->append("X-Forwarded-Port: ").append(std::to_string(client.server_port)).append("\r\n");
  if ((own & kOwnRealIp) == 0) out->append("X-Real-IP: ").append(addr).append("\r\n");
  if ((own & kOwnForwarded) == 0 && plan.forwarded) {
    // forwarding.ts forwardedElement: IPv6 bracketed and quoted; a Host that is not a token quoted (RFC 7239 §4)
    out->append("Forwarded: for=");
    if (addr.find(':') != std::string::npos) out->append("\"[").append(addr).append("]\"");
    else out->append(addr);
    bool token = true;
    for (size_t k = h->host_s; k < h->host_e; k++) token = token && hs::Tchar(p[k]);
    out->append(";host=");
    if (!token) out->push_back('"');
    Append(out, p, h->host_s, h->host_e);
    if (!token) out->push_back('"');
    out->append(";proto=").append(scheme).append("\r\n");
  }
  if (client.has_request_id && (own & kOwnRequestId) == 0) out->append("X-Request-Id: ").append(client.request_id).append("\r\n");
  out->append(plan.extra);
  if (h->minor == 0) out->append("Connection: keep-alive\r\n");
  out->append("\r\n", 2);
  return true;
}

}  // namespace portico::rq
