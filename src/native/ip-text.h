// An IPv4 address as dotted-decimal text, the bytes inet_ntop(AF_INET) writes, without its sprintf (a printf per
// accepted connection showed in the accept path's profile): io.cc's accept records and ioAddress, l4.cc's closed
// records, request-head.cc's client address. Pure: no sockets, no N-API.
#ifndef PORTICO_NATIVE_IP_TEXT_H_
#define PORTICO_NATIVE_IP_TEXT_H_

#include <cstddef>
#include <cstdint>

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

}  // namespace portico

#endif  // PORTICO_NATIVE_IP_TEXT_H_
