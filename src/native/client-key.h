// The client key of limits.connections_per_ip, from a socket's peer or a PROXY header's source, the same string as
// src/route/policy/client-address.ts clientKey makes of the address as JavaScript sees it: IPv4 as it is, an
// IPv4-mapped IPv6 address as IPv4 (at any prefix), IPv6 cut to the prefix ("w0:w1:w2:w3::/64"), the text itself
// from /128 on.
// Pure: no N-API, no locks (the fuzz test holds it to clientKey through client-table.cc's l4ClientKey).
#ifndef PORTICO_NATIVE_CLIENT_KEY_H_
#define PORTICO_NATIVE_CLIENT_KEY_H_

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>

#include "ip-text.h"
#include "proxy-header.h"

namespace portico {

// The prefix that keeps the whole address: the key is the client's address itself, IPv4-mapped as IPv4 (what
// `hash` on $remote_addr balances by, hash-pick.h).
constexpr uint32_t kWholeAddress = 128;

// `text`: the address as JavaScript writes it; `w`: its eight words (IPv4 mapped), or null where it has none.
inline std::string ClientKeyOf(std::string text, const uint16_t* w, uint32_t prefix) {
  if (text.find(':') == std::string::npos || w == nullptr) return text;
  if (pp::IsV4Mapped(w)) return pp::FormatIPv4(w[6], w[7]);  // at /128 too: the key of the unmapped text
  if (prefix >= 128) return text;
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  auto put = [&out](uint16_t v) {
    if (!out.empty()) out += ':';
    bool lead = true;
    for (int shift = 12; shift >= 0; shift -= 4) {
      const unsigned d = (v >> shift) & 15u;
      if (lead && d == 0 && shift > 0) continue;
      lead = false;
      out += kHex[d];
    }
  };
  const uint32_t full = prefix >> 4;
  for (uint32_t i = 0; i < full; i++) put(w[i]);
  const uint32_t bits = prefix & 15;
  uint32_t parts = full;
  if (bits != 0) {
    put(static_cast<uint16_t>(w[full] & (0xffffu << (16 - bits))));
    parts++;
  }
  if (parts < 8) out += "::";
  return out + "/" + std::to_string(prefix);
}

// The key of a socket's peer: its text as Node writes it (ip-text.h AddressText, a link-local zone included).
inline std::string SocketClientKey(const sockaddr_storage& ss, uint32_t prefix) {
  char text[kAddressTextMax];
  uint16_t port = 0;
  const size_t n = AddressText(ss, text, &port);
  uint16_t w[8];
  if (ss.ss_family != AF_INET6 || !AddressWords(ss, w, &port)) return std::string(text, n);
  return ClientKeyOf(std::string(text, n), w, prefix);
}

// The key of a PROXY header's source (family tcp4 or tcp6, its eight words): its text as preface.ts gives it.
inline std::string ProxiedClientKey(pp::Family family, const uint16_t w[8], uint32_t prefix) {
  return ClientKeyOf(pp::AddressText(family, w), w, prefix);
}

}  // namespace portico

#endif  // PORTICO_NATIVE_CLIENT_KEY_H_
