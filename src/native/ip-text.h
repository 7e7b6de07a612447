// A socket address as text, the way Node's net module shows it (so that a client is the same string whichever
// side accepted it): io.cc's accept records and ioAddress, l4.cc's closed records; request-head.cc's client address
// takes the IPv4 part. IPv4 without inet_ntop's sprintf (a printf per accepted connection showed in the accept
// path's profile). No N-API; a link-local IPv6 address's zone costs a lookup of its interface's name.
#ifndef PORTICO_NATIVE_IP_TEXT_H_
#define PORTICO_NATIVE_IP_TEXT_H_

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace portico {

// Writes the four bytes `a` (network order) as "d.d.d.d" at out (room for 15 bytes, no NUL written); the length.
inline size_t Ipv4Text(const uint8_t* a, char* out) {
  size_t n = 0;
  for (int k = 0; k < 4; k++) {
    if (k > 0) out[n++] = '.';
    const uint8_t v = a[k];
    if (v >= 100) out[n++] = static_cast<char>('0' + v / 100);
    if (v >= 10) out[n++] = static_cast<char>('0' + v / 10 % 10);
    out[n++] = static_cast<char>('0' + v % 10);
  }
  return n;
}

// Room for the longest text AddressText writes, its NUL included: an IPv6 address, '%', an interface name.
constexpr size_t kAddressTextMax = INET6_ADDRSTRLEN + 1 + IF_NAMESIZE;

// Writes the address of `ss` at out (room for kAddressTextMax bytes, NUL-terminated) and its port at *port; the
// text's length, 0 for a family other than IPv4 and IPv6. IPv6 as inet_ntop writes it (an IPv4-mapped address keeps
// its "::ffff:" as Node's does) and, for a link-local address, its zone as Node adds it: "fe80::1%eth0", the name of
// the interface the connection came in on, or its index when that interface is gone (Node throws there). Without the
// zone two hosts with one link-local address on two interfaces would be one client to the per-address limits.
inline size_t AddressText(const sockaddr_storage& ss, char* out, uint16_t* port) {
  out[0] = '\0';
  *port = 0;
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    *port = ntohs(a->sin_port);
    const size_t n = Ipv4Text(reinterpret_cast<const uint8_t*>(&a->sin_addr), out);
    out[n] = '\0';
    return n;
  }
  if (ss.ss_family != AF_INET6) return 0;
  auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
  *port = ntohs(a->sin6_port);
  if (inet_ntop(AF_INET6, &a->sin6_addr, out, INET6_ADDRSTRLEN) == nullptr) {
    out[0] = '\0';
    return 0;
  }
  size_t n = std::strlen(out);
  if (IN6_IS_ADDR_LINKLOCAL(&a->sin6_addr) && a->sin6_scope_id > 0) {
    out[n++] = '%';
    if (if_indextoname(a->sin6_scope_id, out + n) != nullptr) {
      n += std::strlen(out + n);
    } else {
      n += static_cast<size_t>(std::snprintf(out + n, kAddressTextMax - n, "%u", static_cast<unsigned>(a->sin6_scope_id)));
    }
  }
  return n;
}

// The address of `ss` as eight 16-bit words (an IPv4 address IPv4-mapped, as PROXY headers and the CIDR matcher
// take it) and its port at *port; false for a family other than IPv4 and IPv6.
inline bool AddressWords(const sockaddr_storage& ss, uint16_t w[8], uint16_t* port) {
  std::memset(w, 0, 16);
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    const uint32_t v = ntohl(a->sin_addr.s_addr);
    w[5] = 0xffff;
    w[6] = static_cast<uint16_t>(v >> 16);
    w[7] = static_cast<uint16_t>(v);
    *port = ntohs(a->sin_port);
    return true;
  }
  if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    for (int i = 0; i < 8; i++) w[i] = static_cast<uint16_t>(a->sin6_addr.s6_addr[2 * i] << 8 | a->sin6_addr.s6_addr[2 * i + 1]);
    *port = ntohs(a->sin6_port);
    return true;
  }
  return false;
}

// An IP literal as the sockaddr a socket's peer would be (port 0): IPv4, or IPv6 with an optional zone
// ("fe80::1%eth0", or an interface index "%3"); false when it does not parse. For the test entries that hold the
// addon's texts and keys of a peer to JavaScript's (client-table.cc l4ClientKey, l4.cc l4HashKey).
inline bool SockaddrOfLiteral(std::string address, sockaddr_storage* ss, bool zone_allowed = true) {
  std::memset(ss, 0, sizeof *ss);
  auto* v4 = reinterpret_cast<sockaddr_in*>(ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(ss);
  if (inet_pton(AF_INET, address.c_str(), &v4->sin_addr) == 1) {
    ss->ss_family = AF_INET;
    return true;
  }
  std::string zone;
  const size_t pct = address.find('%');
  if (pct != std::string::npos) {
    if (!zone_allowed) return false;
    zone = address.substr(pct + 1);
    address.resize(pct);
  }
  if (inet_pton(AF_INET6, address.c_str(), &v6->sin6_addr) != 1) return false;
  ss->ss_family = AF_INET6;
  if (!zone.empty()) {
    unsigned index = if_nametoindex(zone.c_str());
    if (index == 0) {
      char* end = nullptr;
      unsigned long n = std::strtoul(zone.c_str(), &end, 10);
      if (end == zone.c_str() || *end != '\0' || n == 0 || n > 0xffffffffu) return false;
      index = static_cast<unsigned>(n);
    }
    v6->sin6_scope_id = index;
  }
  return true;
}

}  // namespace portico

#endif  // PORTICO_NATIVE_IP_TEXT_H_
