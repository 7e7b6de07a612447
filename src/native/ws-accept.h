// The Sec-WebSocket-Accept value a client's Sec-WebSocket-Key asks for (RFC 6455 §4.2.2: base64 of the SHA-1 of
// the key followed by the protocol's GUID), computed here so that arming the addon's 101 check (io.cc
// ioAnswerUpgradeKey) costs no call into Node's crypto per handshake (its one-shot hash was the largest JavaScript
// leaf of a handshake's profile). The SHA-1 is Node's OpenSSL (the symbols Node exports to addons, as tls.cc uses),
// its EVP_MD fetched once and one EVP_MD_CTX reused per thread (the one-shot SHA1() fetches the digest on every
// call); when OpenSSL gives no SHA-1, Accept says so and io.cc leaves the 101 to JavaScript. The key is hashed as
// JavaScript hashes the same string: a latin1 string's UTF-8 bytes (rewrite.ts websocketAccept), so both give one
// value for any key. No sockets, no N-API.
#ifndef PORTICO_NATIVE_WS_ACCEPT_H_
#define PORTICO_NATIVE_WS_ACCEPT_H_

#include <dlfcn.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace portico::wsa {

constexpr char kGuid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

// Whether this node exports every OpenSSL function the hash calls (Node links OpenSSL statically and exports it; a
// node built against a shared or no OpenSSL may not, and an unresolved call would end the process).
inline bool HaveSymbols() {
  static const bool have = [] {
    for (const char* name : {"EVP_MD_fetch", "EVP_MD_free", "EVP_MD_CTX_new", "EVP_MD_CTX_free", "EVP_DigestInit_ex2",
                             "EVP_DigestUpdate", "EVP_DigestFinal_ex", "ERR_clear_error"})
      if (dlsym(RTLD_DEFAULT, name) == nullptr) return false;
    return true;
  }();
  return have;
}

// SHA-1 with one fetched digest and one context per thread, kept from the thread's first hash: the JS thread is the
// only caller (io.cc ioAnswerUpgradeKey and wsAccept are N-API functions); thread_local keeps an addon loaded in
// worker threads correct.
class Sha1 {
 public:
  // The calling thread's, or null when OpenSSL gives no SHA-1 (functions not exported; a failed fetch, as in FIPS
  // mode without a FIPS provider, or allocation: tried again at the next call).
  static Sha1* ForThread() {
    thread_local Sha1 sha;
    return sha.Ready() ? &sha : nullptr;
  }
  bool Init() { return EVP_DigestInit_ex2(ctx_, md_, nullptr) == 1; }
  bool Update(const uint8_t* p, size_t n) { return EVP_DigestUpdate(ctx_, p, n) == 1; }
  bool Final(uint8_t out[20]) {
    unsigned int len = 0;
    return EVP_DigestFinal_ex(ctx_, out, &len) == 1 && len == 20;
  }

 private:
  Sha1() = default;
  ~Sha1() {
    if (ctx_ != nullptr) EVP_MD_CTX_free(ctx_);
    if (md_ != nullptr) EVP_MD_free(md_);
  }
  Sha1(const Sha1&) = delete;
  Sha1& operator=(const Sha1&) = delete;

  bool Ready() {
    if (md_ != nullptr && ctx_ != nullptr) return true;
    if (!HaveSymbols()) return false;
    if (md_ == nullptr) md_ = EVP_MD_fetch(nullptr, "SHA1", nullptr);
    if (ctx_ == nullptr) ctx_ = EVP_MD_CTX_new();
    if (md_ != nullptr && ctx_ != nullptr) return true;
    ERR_clear_error();  // the failure's entries, which Node's crypto would otherwise find on this thread's queue
    return false;
  }

  EVP_MD* md_ = nullptr;
  EVP_MD_CTX* ctx_ = nullptr;
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

// The accept value for the key whose latin1 characters are key[0..n) (a JavaScript string's code units < 256);
// empty (never a value: those are 28 characters) when OpenSSL could not hash, the caller then leaving the check to
// JavaScript. The key's UTF-8 bytes go to the hash through a bounded buffer (a client's key fills it once).
inline std::string Accept(const uint8_t* key, size_t n) {
  Sha1* sha = Sha1::ForThread();
  if (sha == nullptr) return std::string();
  if (!sha->Init()) {
    ERR_clear_error();
    return std::string();
  }
  uint8_t buf[128];
  size_t used = 0;
  for (size_t i = 0; i < n; i++) {
    if (used + 2 > sizeof buf) {
      if (!sha->Update(buf, used)) {
        ERR_clear_error();
        return std::string();
      }
      used = 0;
    }
    if (key[i] < 0x80) {
      buf[used++] = key[i];
    } else {  // U+0080..U+00FF in UTF-8, as Node hashes a string
      buf[used++] = static_cast<uint8_t>(0xc0 | (key[i] >> 6));
      buf[used++] = static_cast<uint8_t>(0x80 | (key[i] & 0x3f));
    }
  }
  uint8_t digest[20];
  if ((used > 0 && !sha->Update(buf, used)) || !sha->Update(reinterpret_cast<const uint8_t*>(kGuid), sizeof kGuid - 1) ||
      !sha->Final(digest)) {
    ERR_clear_error();
    return std::string();
  }
  char text[28];
  return std::string(text, Base64(digest, sizeof digest, text));
}

}  // namespace portico::wsa

#endif  // PORTICO_NATIVE_WS_ACCEPT_H_
