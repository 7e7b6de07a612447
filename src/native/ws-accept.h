// The Sec-WebSocket-Accept value a client's Sec-WebSocket-Key asks for (RFC 6455 §4.2.2: base64 of the SHA-1 of
// the key followed by the protocol's GUID), computed here so that arming the addon's 101 check (io.cc
// ioAnswerUpgradeKey) costs no call into Node's crypto per handshake (its one-shot hash was the largest JavaScript
// leaf of a handshake's profile). The key is hashed as JavaScript hashes the same string: a latin1 string's
// UTF-8 bytes (rewrite.ts websocketAccept), so both give one value for any key. Pure: no sockets, no N-API.
#ifndef PORTICO_NATIVE_WS_ACCEPT_H_
#define PORTICO_NATIVE_WS_ACCEPT_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace portico::wsa {

constexpr char kGuid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

// SHA-1 (FIPS 180-4 §6.1) of a message held whole in memory.
class Sha1 {
 public:
  void Update(const uint8_t* p, size_t n) {
    bits_ += static_cast<uint64_t>(n) * 8;
    while (n > 0) {
      const size_t take = n < 64 - used_ ? n : 64 - used_;
      std::memcpy(block_ + used_, p, take);
      used_ += take;
      p += take;
      n -= take;
      if (used_ == 64) Compress();
    }
  }
  void Final(uint8_t out[20]) {
    const uint64_t bits = bits_;
    const uint8_t one = 0x80;
    Update(&one, 1);
    if (used_ > 56) {
      std::memset(block_ + used_, 0, 64 - used_);
      Compress();
    }
    std::memset(block_ + used_, 0, 56 - used_);
    for (int k = 0; k < 8; k++) block_[56 + k] = static_cast<uint8_t>(bits >> (56 - 8 * k));
    Compress();
    for (int k = 0; k < 5; k++)
      for (int b = 0; b < 4; b++) out[4 * k + b] = static_cast<uint8_t>(h_[k] >> (24 - 8 * b));
  }

 private:
  static uint32_t Rotl(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }
  void Compress() {
    uint32_t w[80];
    for (int t = 0; t < 16; t++)
      w[t] = static_cast<uint32_t>(block_[4 * t]) << 24 | static_cast<uint32_t>(block_[4 * t + 1]) << 16 |
             static_cast<uint32_t>(block_[4 * t + 2]) << 8 | block_[4 * t + 3];
    for (int t = 16; t < 80; t++) w[t] = Rotl(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1);
    uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4];
    auto round = [&](uint32_t f, uint32_t k, uint32_t wt) {
      const uint32_t temp = Rotl(a, 5) + f + e + k + wt;
      e = d;
      d = c;
      c = Rotl(b, 30);
      b = a;
      a = temp;
    };
    for (int t = 0; t < 20; t++) round((b & c) | (~b & d), 0x5a827999, w[t]);
    for (int t = 20; t < 40; t++) round(b ^ c ^ d, 0x6ed9eba1, w[t]);
    for (int t = 40; t < 60; t++) round((b & c) | (b & d) | (c & d), 0x8f1bbcdc, w[t]);
    for (int t = 60; t < 80; t++) round(b ^ c ^ d, 0xca62c1d6, w[t]);
    h_[0] += a;
    h_[1] += b;
    h_[2] += c;
    h_[3] += d;
    h_[4] += e;
    used_ = 0;
  }

  uint32_t h_[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
  uint8_t block_[64] = {};
  size_t used_ = 0;
  uint64_t bits_ = 0;
};

// Base64 (RFC 4648 §4, with padding) of `n` bytes, written at out (room for 4 * ceil(n / 3) bytes); the length.
inline size_t Base64(const uint8_t* p, size_t n, char* out) {
  static const char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t i = 0;
  size_t o = 0;
  for (; i + 3 <= n; i += 3) {
    const uint32_t v = static_cast<uint32_t>(p[i]) << 16 | static_cast<uint32_t>(p[i + 1]) << 8 | p[i + 2];
    out[o++] = kAlphabet[v >> 18];
    out[o++] = kAlphabet[(v >> 12) & 63];
    out[o++] = kAlphabet[(v >> 6) & 63];
    out[o++] = kAlphabet[v & 63];
  }
  if (i < n) {
    const uint32_t v = static_cast<uint32_t>(p[i]) << 16 | (i + 1 < n ? static_cast<uint32_t>(p[i + 1]) << 8 : 0);
    out[o++] = kAlphabet[v >> 18];
    out[o++] = kAlphabet[(v >> 12) & 63];
    out[o++] = i + 1 < n ? kAlphabet[(v >> 6) & 63] : '=';
    out[o++] = '=';
  }
  return o;
}

// The accept value for the key whose latin1 characters are key[0..n) (a JavaScript string's code units < 256).
inline std::string Accept(const uint8_t* key, size_t n) {
  Sha1 sha;
  for (size_t i = 0; i < n; i++) {
    if (key[i] < 0x80) {
      sha.Update(key + i, 1);
    } else {  // U+0080..U+00FF in UTF-8, as Node hashes a string
      const uint8_t two[2] = {static_cast<uint8_t>(0xc0 | (key[i] >> 6)), static_cast<uint8_t>(0x80 | (key[i] & 0x3f))};
      sha.Update(two, 2);
    }
  }
  sha.Update(reinterpret_cast<const uint8_t*>(kGuid), sizeof kGuid - 1);
  uint8_t digest[20];
  sha.Final(digest);
  char text[28];
  return std::string(text, Base64(digest, sizeof digest, text));
}

}  // namespace portico::wsa

#endif  // PORTICO_NATIVE_WS_ACCEPT_H_
