// The PROXY protocol header reader of src/wire/proxy-protocol.ts (v1 text and v2 binary, haproxy's
// proxy-protocol.txt), in C++ for the addon's L4 listeners behind a balancer, and the trusted-sender CIDRs. Same
// decisions as parseProxyHeader: every input gives the same kind, on 'done' the same fields and length, on 'error'
// the same reason (test/fuzz/native-proxy-protocol.fuzz.test.ts holds both side by side). Pure, bounded (v1 by the
// spec's 107 bytes, v2 by `max_v2`), never reads past `len`; allocates only for TLVs and an error's reason.
// Section numbers (§) are those of proxy-protocol.txt.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace portico::pp {

enum class Kind { kMore, kNone, kDone, kError };
enum class Family : uint8_t { kTcp4, kTcp6, kUnix, kUnknown };

struct Tlv {
  uint8_t type;
  size_t at;   // the value is buf[at, at + len)
  size_t len;
};

struct Result {
  Kind kind = Kind::kMore;
  int version = 0;
  bool local = false;                 // command LOCAL (§2.2): use the socket's own endpoints
  Family family = Family::kUnknown;   // unknown: v1 UNKNOWN, v2 UNSPEC, LOCAL or a datagram family
  uint16_t src[8] = {};               // tcp4 and tcp6 (IPv4 as IPv4-mapped words)
  uint16_t dst[8] = {};
  uint16_t sport = 0;
  uint16_t dport = 0;
  size_t src_path_at = 0, src_path_len = 0;  // unix: the path bytes (up to the first NUL) in the input
  size_t dst_path_at = 0, dst_path_len = 0;
  std::vector<Tlv> tlvs;  // v2, in wire order (a verified CRC32C TLV too)
  size_t used = 0;        // kDone: header bytes; what follows is the client's
  std::string reason;     // kError: the JS reader's reason, word for word
};

constexpr size_t kV1MaxLine = 107;          // PROXY_V1_MAX_LINE
constexpr size_t kDefaultV2Max = 16 * 1024; // DEFAULT_PROXY_V2_MAX_BYTES
constexpr uint8_t kTypeCrc32c = 0x03;

namespace detail {

constexpr uint8_t kV1Sig[6] = {'P', 'R', 'O', 'X', 'Y', ' '};
constexpr uint8_t kV2Sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
constexpr size_t kV2Header = 16;
constexpr size_t kUnixAddr = 108;

inline Result Error(const char* reason) {
  Result r;
  r.kind = Kind::kError;
  r.reason = reason;
  return r;
}

inline Result Of(Kind kind) {
  Result r;
  r.kind = kind;
  return r;
}

}  // namespace detail

// ---- addresses (parseIPv4, parseIPv6, formatIPv4, formatIPv6 of proxy-protocol.ts) ----

// Dotted quad in s[start, end): exactly 4 decimals 0..255, no leading zeros (§2.1). -1 when invalid.
inline int64_t ParseIPv4(const uint8_t* s, size_t start, size_t end) {
  int64_t v = 0;
  int parts = 0;
  size_t i = start;
  while (parts < 4) {
    size_t ps = i;
    int n = 0;
    while (i < end && i - ps < 4) {
      int d = static_cast<int>(s[i]) - '0';
      if (d < 0 || d > 9) break;
      n = n * 10 + d;
      i++;
    }
    size_t digits = i - ps;
    if (digits == 0 || digits > 3 || n > 255 || (digits > 1 && s[ps] == '0')) return -1;
    v = v * 256 + n;
    parts++;
    if (parts < 4) {
      if (i >= end || s[i] != '.') return -1;
      i++;
    }
  }
  return i == end ? v : -1;
}

inline int HexValue(uint8_t c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// RFC 4291 §2.2 text (1-4 hex digits a group, at most one "::", an optional dotted IPv4 tail) in s[0, n) into 8
// words; no zone, no brackets. False when invalid (then `out` holds garbage).
inline bool ParseIPv6(const uint8_t* s, size_t n, uint16_t out[8]) {
  if (n < 2 || n > 45) return false;
  int g = 0;
  int gap = -1;
  size_t i = 0;
  if (s[0] == ':') {
    if (s[1] != ':') return false;
    gap = 0;
    i = 2;
  }
  while (i < n) {
    if (g == 8) return false;
    size_t gs = i;
    uint32_t v = 0;
    while (i < n && i - gs < 5) {
      int h = HexValue(s[i]);
      if (h < 0) break;
      v = v * 16 + static_cast<uint32_t>(h);
      i++;
    }
    if (i < n && s[i] == '.') {
      if (g > 6) return false;
      int64_t ip4 = ParseIPv4(s, gs, n);
      if (ip4 < 0) return false;
      out[g++] = static_cast<uint16_t>(ip4 >> 16);
      out[g++] = static_cast<uint16_t>(ip4 & 0xffff);
      i = n;
      break;
    }
    size_t digits = i - gs;
    if (digits == 0 || digits > 4) return false;
    out[g++] = static_cast<uint16_t>(v);
    if (i == n) break;
    if (s[i] != ':') return false;
    i++;
    if (i == n) return false;  // a single trailing colon
    if (s[i] == ':') {
      if (gap >= 0) return false;
      gap = g;
      i++;
    }
  }
  if (gap < 0) return g == 8;
  if (g > 7) return false;
  int tail = g - gap;
  for (int k = 1; k <= tail; k++) out[8 - k] = out[g - k];
  for (int k = gap; k < 8 - tail; k++) out[k] = 0;
  return true;
}

inline bool IsV4Mapped(const uint16_t w[8]) {
  return w[0] == 0 && w[1] == 0 && w[2] == 0 && w[3] == 0 && w[4] == 0 && w[5] == 0xffff;
}

inline std::string FormatIPv4(uint16_t hi, uint16_t lo) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%u.%u.%u.%u", hi >> 8, hi & 0xffu, lo >> 8, lo & 0xffu);
  return buf;
}

// RFC 5952 §4: hex groups in lower case, no leading zeros, the longest run of two or more zero groups as "::"
// (formatIPv6(w, false)).
inline std::string HexGroups(const uint16_t w[8]) {
  int best = -1, best_len = 1;
  for (int i = 0; i < 8;) {
    if (w[i] != 0) {
      i++;
      continue;
    }
    int j = i;
    while (j < 8 && w[j] == 0) j++;
    if (j - i > best_len) {
      best = i;
      best_len = j - i;
    }
    i = j;
  }
  std::string out;
  char buf[8];
  for (int i = 0; i < 8; i++) {
    if (i == best) {
      out += "::";
      i += best_len - 1;
      continue;
    }
    if (!out.empty() && out.back() != ':') out += ':';
    std::snprintf(buf, sizeof buf, "%x", w[i]);
    out += buf;
  }
  return out;
}

// RFC 5952 §4, and §5: an IPv4-mapped address as ::ffff:a.b.c.d. The text JS gives a header's tcp6 address
// (formatIPv6(w)).
inline std::string FormatIPv6(const uint16_t w[8]) {
  if (IsV4Mapped(w)) return "::ffff:" + FormatIPv4(w[6], w[7]);
  return HexGroups(w);
}

// The client's address as JS writes a header's source: IPv4 dotted (tcp4), else formatIPv6.
inline std::string AddressText(Family family, const uint16_t w[8]) {
  return family == Family::kTcp4 ? FormatIPv4(w[6], w[7]) : FormatIPv6(w);
}

// ---- CRC32C (RFC 4960 Appendix B, Castagnoli, reflected) ----

inline uint32_t Crc32cUpdate(uint32_t crc, const uint8_t* b, size_t start, size_t end) {
  static const auto table = [] {
    struct T {
      uint32_t v[256];
    } t{};
    for (uint32_t n = 0; n < 256; n++) {
      uint32_t c = n;
      for (int k = 0; k < 8; k++) c = (c & 1) ? 0x82f63b78u ^ (c >> 1) : c >> 1;
      t.v[n] = c;
    }
    return t;
  }();
  for (size_t i = start; i < end; i++) crc = table.v[(crc ^ b[i]) & 0xff] ^ (crc >> 8);
  return crc;
}

namespace detail {

// §2.1: decimal 0..65535, no heading zeroes; -1 when invalid.
inline int32_t PortText(const uint8_t* s, size_t n) {
  if (n == 0 || n > 5 || (n > 1 && s[0] == '0')) return -1;
  int32_t v = 0;
  for (size_t i = 0; i < n; i++) {
    int d = static_cast<int>(s[i]) - '0';
    if (d < 0 || d > 9) return -1;
    v = v * 10 + d;
  }
  return v <= 65535 ? v : -1;
}

// ---- v1 (§2.1) ----

inline Result ParseV1(const uint8_t* b, size_t len) {
  // "PROXY" identifies v1; with anything but one space after it, it is a broken v1 header, not a plain connection
  const size_t sig_end = len < sizeof kV1Sig ? len : sizeof kV1Sig;
  for (size_t i = 1; i < sig_end; i++) {
    if (b[i] != kV1Sig[i]) return i < sizeof kV1Sig - 1 ? Of(Kind::kNone) : Error("PROXY v1: \"PROXY\" not followed by a single space (§2.1)");
  }
  if (len <= sizeof kV1Sig) return Of(Kind::kMore);
  // the line is decoded only once its CRLF is in; the CR may sit at most at index 105 (CRLF within 107 bytes)
  const size_t cr_limit = kV1MaxLine - 1;
  const size_t end = len < cr_limit ? len : cr_limit;
  size_t cr = 0;
  bool found = false;
  for (size_t i = sizeof kV1Sig; i < end; i++) {
    if (b[i] == '\n') return Error("PROXY v1: LF without CR (§2.1)");
    if (b[i] == '\r') {
      if (i + 1 >= len) return Of(Kind::kMore);
      if (b[i + 1] != '\n') return Error("PROXY v1: CR not followed by LF (§2.1)");
      cr = i;
      found = true;
      break;
    }
  }
  if (!found) return len >= cr_limit ? Error("PROXY v1: no CRLF in the first 107 bytes (§2.1)") : Of(Kind::kMore);
  const uint8_t* line = b + sizeof kV1Sig;
  const size_t n = cr - sizeof kV1Sig;
  Result r;
  r.version = 1;
  r.used = cr + 2;
  static const uint8_t kUnknown[7] = {'U', 'N', 'K', 'N', 'O', 'W', 'N'};
  bool unknown = n >= 7 && (n == 7 || line[7] == ' ');
  for (size_t i = 0; unknown && i < 7; i++) unknown = line[i] == kUnknown[i];
  if (unknown) {
    // §2.1: for UNKNOWN the receiver must ignore anything before the CRLF
    r.kind = Kind::kDone;
    return r;
  }
  // the fields between single spaces (an empty one between two spaces counts, as String.split)
  size_t at[5], size[5], fields = 0, from = 0;
  for (size_t i = 0; i <= n; i++) {
    if (i < n && line[i] != ' ') continue;
    if (fields < 5) {
      at[fields] = from;
      size[fields] = i - from;
    }
    fields++;
    from = i + 1;
  }
  const bool v4 = size[0] == 4 && line[0] == 'T' && line[1] == 'C' && line[2] == 'P' && line[3] == '4';
  const bool v6 = size[0] == 4 && line[0] == 'T' && line[1] == 'C' && line[2] == 'P' && line[3] == '6';
  if (!v4 && !v6) return Error("PROXY v1: protocol is not TCP4, TCP6 or UNKNOWN (§2.1)");
  if (fields != 5) return Error("PROXY v1: expected \"PROTO SRC DST SPORT DPORT\" separated by single spaces (§2.1)");
  bool ok = true;
  uint16_t* words[2] = {r.src, r.dst};
  for (int k = 0; k < 2; k++) {
    const uint8_t* s = line + at[1 + k];
    if (v4) {
      int64_t ip = ParseIPv4(s, 0, size[1 + k]);
      if (ip < 0) {
        ok = false;
        continue;
      }
      for (int w = 0; w < 5; w++) words[k][w] = 0;
      words[k][5] = 0xffff;
      words[k][6] = static_cast<uint16_t>(ip >> 16);
      words[k][7] = static_cast<uint16_t>(ip & 0xffff);
    } else if (!ParseIPv6(s, size[1 + k], words[k])) {
      ok = false;
    }
  }
  if (!ok) return Error(v4 ? "PROXY v1: address is not a valid IPv4 address (§2.1)" : "PROXY v1: address is not a valid IPv6 address (§2.1)");
  int32_t sport = PortText(line + at[3], size[3]);
  int32_t dport = PortText(line + at[4], size[4]);
  if (sport < 0 || dport < 0) return Error("PROXY v1: port is not a decimal in 0..65535 without leading zeros (§2.1)");
  r.kind = Kind::kDone;
  r.family = v4 ? Family::kTcp4 : Family::kTcp6;
  r.sport = static_cast<uint16_t>(sport);
  r.dport = static_cast<uint16_t>(dport);
  return r;
}

// ---- v2 (§2.2) ----

inline void UnixPath(const uint8_t* b, size_t at, size_t* out_at, size_t* out_len) {
  size_t e = at;
  while (e < at + kUnixAddr && b[e] != 0) e++;
  *out_at = at;
  *out_len = e - at;
}

inline Result ParseV2(const uint8_t* b, size_t len, size_t max_bytes) {
  const size_t sig_end = len < sizeof kV2Sig ? len : sizeof kV2Sig;
  for (size_t i = 1; i < sig_end; i++) {
    if (b[i] != kV2Sig[i]) return Of(Kind::kNone);
  }
  if (len <= sizeof kV2Sig) return Of(Kind::kMore);
  const uint8_t ver_cmd = b[12];
  if (ver_cmd >> 4 != 2) return Error("PROXY v2: version is not 2 (§2.2)");
  const int cmd = ver_cmd & 0x0f;
  if (cmd > 1) return Error("PROXY v2: command is neither LOCAL nor PROXY (§2.2)");
  if (len < 14) return Of(Kind::kMore);
  Family family;
  size_t addr_len;
  switch (b[13]) {
    case 0x00: family = Family::kUnknown; addr_len = 0; break;
    case 0x11: family = Family::kTcp4; addr_len = 12; break;
    case 0x21: family = Family::kTcp6; addr_len = 36; break;
    case 0x31: family = Family::kUnix; addr_len = 2 * kUnixAddr; break;
    // §2.2: a receiver that does not support a valid combination falls back to UNSPEC (ignores the addresses)
    case 0x12: family = Family::kUnknown; addr_len = 12; break;
    case 0x22: family = Family::kUnknown; addr_len = 36; break;
    case 0x32: family = Family::kUnknown; addr_len = 2 * kUnixAddr; break;
    default:
      // LOCAL ignores the family byte entirely (§2.2), so only PROXY rejects what is not in the table
      if (cmd == 1) return Error("PROXY v2: invalid address family / transport byte (§2.2)");
      family = Family::kUnknown;
      addr_len = 0;
  }
  if (len < kV2Header) return Of(Kind::kMore);
  const size_t body_len = static_cast<size_t>(b[14] << 8 | b[15]);
  const size_t total = kV2Header + body_len;
  if (total > max_bytes) {
    char reason[96];
    std::snprintf(reason, sizeof reason, "PROXY v2: header of %zu bytes is larger than %zu", total, max_bytes);
    return Error(reason);
  }
  if (cmd == 1 && body_len < addr_len) return Error("PROXY v2: length shorter than the address block (§2.2)");
  if (len < total) return Of(Kind::kMore);
  Result r;
  r.version = 2;
  r.used = total;
  if (cmd == 0) {
    // §2.2 LOCAL: use the real endpoints and discard the whole block, family included
    r.kind = Kind::kDone;
    r.local = true;
    return r;
  }
  r.family = family;
  const size_t a = kV2Header;
  if (family == Family::kTcp4) {
    r.src[5] = r.dst[5] = 0xffff;
    r.src[6] = static_cast<uint16_t>(b[a] << 8 | b[a + 1]);
    r.src[7] = static_cast<uint16_t>(b[a + 2] << 8 | b[a + 3]);
    r.dst[6] = static_cast<uint16_t>(b[a + 4] << 8 | b[a + 5]);
    r.dst[7] = static_cast<uint16_t>(b[a + 6] << 8 | b[a + 7]);
    r.sport = static_cast<uint16_t>(b[a + 8] << 8 | b[a + 9]);
    r.dport = static_cast<uint16_t>(b[a + 10] << 8 | b[a + 11]);
  } else if (family == Family::kTcp6) {
    for (int k = 0; k < 8; k++) {
      r.src[k] = static_cast<uint16_t>(b[a + 2 * k] << 8 | b[a + 2 * k + 1]);
      r.dst[k] = static_cast<uint16_t>(b[a + 16 + 2 * k] << 8 | b[a + 16 + 2 * k + 1]);
    }
    r.sport = static_cast<uint16_t>(b[a + 32] << 8 | b[a + 33]);
    r.dport = static_cast<uint16_t>(b[a + 34] << 8 | b[a + 35]);
  } else if (family == Family::kUnix) {
    UnixPath(b, a, &r.src_path_at, &r.src_path_len);
    UnixPath(b, a + kUnixAddr, &r.dst_path_at, &r.dst_path_len);
  }
  // TLVs (§2.2): type(1) length(2) value; each must end within the header
  size_t p = kV2Header + addr_len;
  size_t crc_at = 0;
  bool has_crc = false;
  while (p < total) {
    if (p + 3 > total) return Error("PROXY v2: truncated TLV header (§2.2)");
    const uint8_t type = b[p];
    const size_t v_len = static_cast<size_t>(b[p + 1] << 8 | b[p + 2]);
    const size_t v = p + 3;
    if (v + v_len > total) return Error("PROXY v2: TLV runs past the header length (§2.2)");
    if (type == kTypeCrc32c) {
      if (v_len != 4) return Error("PROXY v2: CRC32C TLV is not 4 bytes (§2.2.3)");
      if (has_crc) return Error("PROXY v2: more than one CRC32C TLV (§2.2.3)");
      has_crc = true;
      crc_at = v;
    }
    r.tlvs.push_back(Tlv{type, v, v_len});
    p = v + v_len;
  }
  if (has_crc) {
    // §2.2.3: the checksum covers the whole header with the checksum field zeroed
    const uint32_t sent = static_cast<uint32_t>(b[crc_at]) << 24 | static_cast<uint32_t>(b[crc_at + 1]) << 16 |
                          static_cast<uint32_t>(b[crc_at + 2]) << 8 | b[crc_at + 3];
    static const uint8_t kZero4[4] = {0, 0, 0, 0};
    uint32_t c = Crc32cUpdate(0xffffffffu, b, 0, crc_at);
    c = Crc32cUpdate(c, kZero4, 0, 4);
    c = Crc32cUpdate(c, b, crc_at + 4, total);
    if ((c ^ 0xffffffffu) != sent) return Error("PROXY v2: CRC32C checksum mismatch (§2.2.3)");
  }
  r.kind = Kind::kDone;
  return r;
}

}  // namespace detail

// parseProxyHeader(buf, maxV2Bytes): 'none' as soon as the bytes cannot be a signature, 'more' while they still
// could be or the header is incomplete, errors as early as the bytes show them.
inline Result Parse(const uint8_t* b, size_t len, size_t max_v2 = kDefaultV2Max) {
  if (len == 0) return detail::Of(Kind::kMore);
  if (b[0] == detail::kV1Sig[0]) return detail::ParseV1(b, len);
  if (b[0] == detail::kV2Sig[0]) return detail::ParseV2(b, len, max_v2);
  return detail::Of(Kind::kNone);
}

// ---- trusted senders (createCidrMatcher): every address and CIDR in the IPv6 space, IPv4 as ::ffff:a.b.c.d/(96+n) ----

struct Cidr {
  uint16_t words[8] = {};
  int prefix = 0;
};

// `text` as an address with an optional /prefix, network bits only (parseCidr); false when checkCidr refuses it.
inline bool ParseCidr(const std::string& text, Cidr* out) {
  const size_t slash = text.find('/');
  const size_t addr_len = slash == std::string::npos ? text.size() : slash;
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  bool v4;
  int64_t ip4 = ParseIPv4(s, 0, addr_len);
  if (ip4 >= 0) {
    v4 = true;
    for (int k = 0; k < 5; k++) out->words[k] = 0;
    out->words[5] = 0xffff;
    out->words[6] = static_cast<uint16_t>(ip4 >> 16);
    out->words[7] = static_cast<uint16_t>(ip4 & 0xffff);
  } else if (ParseIPv6(s, addr_len, out->words)) {
    v4 = false;
  } else {
    return false;
  }
  int prefix = v4 ? 32 : 128;
  if (slash != std::string::npos) {
    const size_t n = text.size() - slash - 1;
    const uint8_t* p = s + slash + 1;
    if (n == 0 || n > 3 || (n > 1 && p[0] == '0')) return false;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
      if (p[i] < '0' || p[i] > '9') return false;
      v = v * 10 + (p[i] - '0');
    }
    if (v > prefix) return false;
    prefix = v;
  }
  if (v4) prefix += 96;
  for (int bit = prefix; bit < 128; bit++) {
    if ((out->words[bit >> 4] >> (15 - (bit & 15))) & 1) return false;
  }
  out->prefix = prefix;
  return true;
}

// Whether the address `w` (8 words, IPv4 as IPv4-mapped) is inside one of `list`.
inline bool Matches(const std::vector<Cidr>& list, const uint16_t w[8]) {
  for (const Cidr& c : list) {
    int bits = c.prefix;
    int k = 0;
    for (; bits >= 16; k++, bits -= 16) {
      if (w[k] != c.words[k]) break;
    }
    if (bits >= 16) continue;
    if (bits == 0 || ((w[k] ^ c.words[k]) & ((0xffff << (16 - bits)) & 0xffff)) == 0) return true;
  }
  return false;
}

}  // namespace portico::pp
