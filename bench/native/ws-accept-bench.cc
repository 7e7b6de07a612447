// The WebSocket accept value on its own (src/native/ws-accept.h Accept), without N-API, beside the other ways OpenSSL 3
// offers the same SHA-1: ns per client key (24 bytes, as clients send them), to choose the API ws-accept.h uses and
// to compare a build of the header against another (compile with -I pointing at the other's src/native). Checks every
// way's value against RFC 6455's example before timing. Links the system's libcrypto, not Node's (its version is
// printed; run bench/micro/ws-accept.bench.ts for the addon inside Node). Not a test.
// Build and run (from the repository):
//   mkdir -p build/bench && g++ -O2 -std=c++17 -Isrc/native -o build/bench/ws-accept-bench
//     bench/native/ws-accept-bench.cc -lcrypto -Wno-deprecated-declarations && build/bench/ws-accept-bench
// (one line)
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "ws-accept.h"

namespace {

constexpr char kKey[] = "dGhlIHNhbXBsZSBub25jZQ==";
constexpr char kWant[] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
constexpr size_t kKeyLen = sizeof kKey - 1;
constexpr size_t kGuidLen = sizeof portico::wsa::kGuid - 1;

std::string Encode(const uint8_t digest[20]) {
  char text[28];
  return std::string(text, portico::wsa::Base64(digest, 20, text));
}

// the key (ASCII: its own UTF-8) and the GUID, one message
void Message(uint8_t out[kKeyLen + kGuidLen]) {
  std::memcpy(out, kKey, kKeyLen);
  std::memcpy(out + kKeyLen, portico::wsa::kGuid, kGuidLen);
}

std::string Header() { return portico::wsa::Accept(reinterpret_cast<const uint8_t*>(kKey), kKeyLen); }

std::string OneShot() {  // SHA1(): EVP_Q_digest in OpenSSL 3, a fetch per call
  uint8_t m[kKeyLen + kGuidLen], d[20];
  Message(m);
  SHA1(m, sizeof m, d);
  return Encode(d);
}

std::string EvpDigestLegacy() {  // EVP_Digest with EVP_sha1(): a context made per call, an implicit fetch per init
  uint8_t m[kKeyLen + kGuidLen], d[20];
  Message(m);
  unsigned int len = 0;
  EVP_Digest(m, sizeof m, d, &len, EVP_sha1(), nullptr);
  return Encode(d);
}

std::string FetchedReused() {  // what ws-accept.h does, with the message whole
  static EVP_MD* md = EVP_MD_fetch(nullptr, "SHA1", nullptr);
  static EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  uint8_t m[kKeyLen + kGuidLen], d[20];
  Message(m);
  unsigned int len = 0;
  EVP_DigestInit_ex2(ctx, md, nullptr);
  EVP_DigestUpdate(ctx, m, sizeof m);
  EVP_DigestFinal_ex(ctx, d, &len);
  return Encode(d);
}

std::string LowLevel() {  // SHA1_Init/Update/Final: deprecated in OpenSSL 3.0
  uint8_t m[kKeyLen + kGuidLen], d[20];
  Message(m);
  SHA_CTX c;
  SHA1_Init(&c);
  SHA1_Update(&c, m, sizeof m);
  SHA1_Final(d, &c);
  return Encode(d);
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main() {
  struct Way {
    const char* name;
    std::string (*fn)();
  };
  const Way ways[] = {{"ws-accept.h Accept", Header},
                      {"SHA1() one-shot", OneShot},
                      {"EVP_Digest(EVP_sha1())", EvpDigestLegacy},
                      {"EVP_MD_fetch once + ctx reused", FetchedReused},
                      {"SHA1_Init/Update/Final", LowLevel}};
  std::printf("# %s; ns per accept value of a 24-byte key (hash + base64 + string), median of 200 samples of 1000\n",
              OpenSSL_version(OPENSSL_VERSION));
  size_t sink = 0;
  for (const Way& w : ways) {
    if (w.fn() != kWant) {
      std::fprintf(stderr, "precheck failed: %s gives %s\n", w.name, w.fn().c_str());
      return 1;
    }
    std::vector<double> samples;
    for (int s = 0; s < 220; s++) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < 1000; i++) sink += w.fn().size();
      const auto t1 = std::chrono::steady_clock::now();
      if (s >= 20) samples.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count() / 1000);
    }
    std::printf("%-32s %6.0f ns  (%zu)\n", w.name, Median(samples), sink % 7);
  }
  return 0;
}
