// The TLS ClientHello reader of src/wire/client-hello.ts, in C++ for the addon's L4 listeners (TLS passthrough by
// SNI without a JS object per connection). Same decisions, byte for byte: every input gives the same kind and,
// for 'done', the same server name as parseClientHello (test/unit/native-client-hello.test.ts fuzzes both side by
// side). Pure, bounded, never reads past `len`, allocates only the name.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace portico::hello {

enum class Kind { kMore, kDone, kNotTls, kError };

struct Result {
  Kind kind = Kind::kMore;
  bool has_sni = false;
  std::string sni;     // lower-cased, validated; only when has_sni
  const char* reason = nullptr;  // kError: the JS reader's reason, word for word
  size_t record_bytes = 0;       // kDone: bytes of the records that carried the hello
};

constexpr size_t kDefaultMax = 16 * 1024;

namespace detail {

constexpr uint8_t kHandshake = 0x16;
constexpr size_t kRecordHeader = 5;
constexpr size_t kHsHeader = 4;
constexpr size_t kMaxPlaintext = 16384;

inline Result Error(const char* reason) {
  Result r;
  r.kind = Kind::kError;
  r.reason = reason;
  return r;
}

inline uint8_t Lower(uint8_t c) {
  if (c >= '0' && c <= '9') return c;
  if (c >= 'a' && c <= 'z') return c;
  if (c >= 'A' && c <= 'Z') return c | 0x20;
  if (c == '-' || c == '_' || c == '.') return c;
  return 0;
}

// Hex digits, ':' and '.' with at least one ':': what an IPv6 literal (or one with an IPv4 tail) is made of.
inline bool Ipv6Literal(const uint8_t* b, size_t s, size_t e) {
  bool colon = false;
  for (size_t i = s; i < e; i++) {
    uint8_t c = b[i];
    if (c == ':') colon = true;
    else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == '.')) return false;
  }
  return colon;
}

// Validates a HostName as a DNS name into `out`, lower-cased; `*ip` set (and `out` left empty) for an IP literal,
// which names no host.
inline const char* HostName(const uint8_t* b, size_t s, size_t e, std::string* out, bool* ip) {
  size_t n = e - s;
  *ip = false;
  if (n > 253) return "server name longer than 253 characters (RFC 1035 §2.3.4)";
  if (b[e - 1] == '.') return "server name has a trailing dot (RFC 6066 §3)";
  if (Ipv6Literal(b, s, e)) {
    *ip = true;
    return nullptr;
  }
  size_t label_start = s;
  bool last_numeric = true;
  for (size_t i = s; i <= e; i++) {
    uint8_t c = i < e ? b[i] : '.';
    if (c == '.') {
      size_t label_len = i - label_start;
      if (label_len == 0) return "server name has an empty label";
      if (label_len > 63) return "server name label longer than 63 characters (RFC 1035 §2.3.4)";
      if (b[label_start] == '-' || b[i - 1] == '-') return "server name label starts or ends with a hyphen (RFC 1123 §2.1)";
      last_numeric = true;
      for (size_t k = label_start; k < i; k++) {
        if (b[k] < '0' || b[k] > '9') {
          last_numeric = false;
          break;
        }
      }
      label_start = i + 1;
      continue;
    }
    if (Lower(c) == 0) return "server name has a character outside letters, digits, \"-\", \"_\" and \".\" (RFC 6066 §3)";
  }
  if (last_numeric) {  // an IPv4 literal (or one that could be read as one): no TLD is all-numeric
    *ip = true;
    return nullptr;
  }
  out->resize(n);
  for (size_t i = 0; i < n; i++) (*out)[i] = static_cast<char>(Lower(b[s + i]));
  return nullptr;
}

inline const char* ServerName(const uint8_t* b, size_t p, size_t end, Result* r) {
  if (end - p < 2) return "server_name extension truncated";
  size_t list_len = static_cast<size_t>(b[p] << 8 | b[p + 1]);
  p += 2;
  if (list_len == 0 || p + list_len != end) return "server_name list length is wrong (RFC 6066 §3)";
  bool named = false;
  while (p < end) {
    if (p + 3 > end) return "server_name entry truncated";
    uint8_t type = b[p];
    size_t name_len = static_cast<size_t>(b[p + 1] << 8 | b[p + 2]);
    p += 3;
    if (name_len == 0 || p + name_len > end) return "server_name entry length is wrong (RFC 6066 §3)";
    if (type == 0) {
      if (named) return "more than one host_name in server_name (RFC 6066 §3)";
      named = true;
      bool ip = false;
      const char* bad = HostName(b, p, p + name_len, &r->sni, &ip);
      if (bad != nullptr) return bad;
      // an IP literal names no host (RFC 6066 §3 forbids it, yet some clients send one): as without SNI
      r->has_sni = !ip;
    }
    p += name_len;
  }
  return nullptr;
}

inline const char* Alpn(const uint8_t* b, size_t p, size_t end) {
  if (end - p < 2) return "ALPN extension truncated";
  size_t list_len = static_cast<size_t>(b[p] << 8 | b[p + 1]);
  p += 2;
  if (list_len < 2 || p + list_len != end) return "ALPN list length is wrong (RFC 7301 §3.1)";
  while (p < end) {
    size_t n = b[p++];
    if (n == 0) return "empty ALPN protocol name (RFC 7301 §3.1)";
    if (p + n > end) return "ALPN protocol name runs past the list";
    p += n;
  }
  return nullptr;
}

inline const char* SupportedVersions(const uint8_t* b, size_t p, size_t end) {
  if (end - p < 1) return "supported_versions extension truncated";
  size_t list_len = b[p++];
  if (list_len < 2 || (list_len & 1) != 0 || p + list_len != end) return "supported_versions length is wrong (RFC 8446 §4.2.1)";
  return nullptr;
}

inline Result Body(const uint8_t* b, size_t start, size_t end, size_t record_bytes) {
  size_t p = start;
  if (end - p < 2 + 32 + 1) return Error("ClientHello too short");
  if (b[p] != 0x03) return Error("ClientHello legacy_version major is not 3 (RFC 8446 §4.1.2)");
  p += 2 + 32;
  size_t sid = b[p++];
  if (sid > 32) return Error("legacy_session_id longer than 32 bytes (RFC 8446 §4.1.2)");
  p += sid;
  if (p + 2 > end) return Error("ClientHello truncated in cipher_suites");
  size_t cs = static_cast<size_t>(b[p] << 8 | b[p + 1]);
  p += 2;
  if (cs < 2 || (cs & 1) != 0) return Error("cipher_suites length is not a positive even number (RFC 8446 §4.1.2)");
  p += cs;
  if (p + 1 > end) return Error("ClientHello truncated in cipher_suites");
  size_t cm = b[p++];
  if (cm < 1) return Error("legacy_compression_methods is empty (RFC 8446 §4.1.2)");
  p += cm;
  if (p > end) return Error("ClientHello truncated in legacy_compression_methods");
  Result r;
  r.kind = Kind::kDone;
  r.record_bytes = record_bytes;
  if (p == end) return r;
  if (p + 2 > end) return Error("ClientHello truncated in extensions length");
  size_t ext_len = static_cast<size_t>(b[p] << 8 | b[p + 1]);
  p += 2;
  if (p + ext_len != end) return Error("extensions length does not match the ClientHello length (RFC 8446 §4.1.2)");
  std::vector<uint16_t> seen;
  while (p < end) {
    if (p + 4 > end) return Error("extension header truncated");
    uint16_t type = static_cast<uint16_t>(b[p] << 8 | b[p + 1]);
    size_t d = static_cast<size_t>(b[p + 2] << 8 | b[p + 3]);
    p += 4;
    if (p + d > end) return Error("extension data runs past the extensions block");
    for (uint16_t t : seen) {
      if (t == type) return Error("duplicate extension (RFC 8446 §4.2)");
    }
    seen.push_back(type);
    if (type == 41 && p + d != end) return Error("pre_shared_key is not the last extension (RFC 8446 §4.2.11)");
    const char* bad = nullptr;
    if (type == 0) bad = ServerName(b, p, p + d, &r);
    else if (type == 16) bad = Alpn(b, p, p + d);
    else if (type == 43) bad = SupportedVersions(b, p, p + d);
    if (bad != nullptr) return Error(bad);
    p += d;
  }
  return r;
}

}  // namespace detail

// parseClientHello(buf) of src/wire/client-hello.ts, with its default bound (the reasons name it).
inline Result Parse(const uint8_t* buf, size_t len) {
  constexpr size_t max_bytes = kDefaultMax;
  using namespace detail;
  Result more;
  if (len == 0) return more;
  if (buf[0] != kHandshake) {
    Result r;
    r.kind = Kind::kNotTls;
    return r;
  }
  size_t pos = 0, hs_bytes = 0, records = 0;
  uint64_t hs_header = 0;
  int64_t need = -1;
  for (;;) {
    if (pos >= max_bytes) return Error("ClientHello larger than 16384 bytes");
    if (pos >= len) return more;
    if (buf[pos] != kHandshake) return Error("non-handshake record before the ClientHello was complete (RFC 8446 §5.1)");
    if (pos + 1 < len && buf[pos + 1] != 0x03) return Error("record version major is not 3 (RFC 8446 §5.1)");
    if (pos + kRecordHeader > len) return more;
    size_t frag = static_cast<size_t>(buf[pos + 3] << 8 | buf[pos + 4]);
    if (frag > kMaxPlaintext) return Error("record longer than 2^14 bytes (RFC 8446 §5.1)");
    if (frag == 0) return Error("zero-length handshake record (RFC 8446 §5.1)");
    size_t rec_end = pos + kRecordHeader + frag;
    if (rec_end > max_bytes) return Error("ClientHello larger than 16384 bytes");
    records++;
    size_t data = pos + kRecordHeader;
    size_t avail = (rec_end < len ? rec_end : len) - data;
    for (size_t k = 0; k < avail && hs_bytes + k < kHsHeader; k++) {
      uint8_t b = buf[data + k];
      size_t at = hs_bytes + k;
      if (at == 0 && b != 0x01) return Error("first handshake message is not a ClientHello (RFC 8446 §4)");
      hs_header = hs_header * 256 + b;
      if (at == kHsHeader - 1) {
        need = static_cast<int64_t>(kHsHeader + (hs_header & 0xffffff));
        size_t n = static_cast<size_t>(need);
        size_t min_wire = n + kRecordHeader * ((n + kMaxPlaintext - 1) / kMaxPlaintext);
        if (min_wire > max_bytes) return Error("ClientHello larger than 16384 bytes");
      }
    }
    hs_bytes += avail;
    if (need >= 0 && hs_bytes >= static_cast<size_t>(need)) {
      size_t n = static_cast<size_t>(need);
      size_t used_here = n - (hs_bytes - avail);
      if (frag > used_here) return Error("bytes after the ClientHello in its record (RFC 8446 §5.1)");
      if (records == 1) return Body(buf, kRecordHeader + kHsHeader, kRecordHeader + n, rec_end);
      std::vector<uint8_t> hs(n);
      size_t out = 0, at = 0;
      while (out < n) {
        size_t f = static_cast<size_t>(buf[at + 3] << 8 | buf[at + 4]);
        size_t take = f < n - out ? f : n - out;
        for (size_t k = 0; k < take; k++) hs[out + k] = buf[at + kRecordHeader + k];
        out += take;
        at += kRecordHeader + f;
      }
      return Body(hs.data(), kHsHeader, n, rec_end);
    }
    if (rec_end > len) return more;
    pos = rec_end;
  }
}

}  // namespace portico::hello
