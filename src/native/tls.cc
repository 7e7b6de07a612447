// Native TLS with Node's own OpenSSL (headers from node-gyp's include/node/openssl, symbols from the node binary):
// listener contexts built from PEM handed in by JS, SNI -> context by src/accept/tls.ts's rules, ALPN http/1.1,
// session tickets sealed with a key ring JS sets (the primary's keys, so every worker resumes every ticket), and
// the non-blocking Session calls io.cc and tls-relay.cc drive; and TLS-ALPN-01 (RFC 8737) challenge certificates
// served to `acme-tls/1` ClientHellos. Never blocks, never reads a socket on its own.
#include "tls.h"

#include <dlfcn.h>
#include <malloc.h>
#include <time.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace portico::tls {

// One listener: a context per certificate, the first being the default (no SNI, or a name no certificate has).
struct Server {
  std::vector<SSL_CTX*> ctxs;
  std::unordered_map<std::string, size_t> exact;
  std::unordered_map<std::string, size_t> wildcard;  // "*.example.com" is kept as "example.com"
  ~Server() {
    for (SSL_CTX* c : ctxs) SSL_CTX_free(c);
  }
};

namespace {

// Every OpenSSL function this file calls (macros resolve to SSL_CTX_ctrl / SSL_CTX_callback_ctrl / SSL_ctrl).
// Node links OpenSSL statically and exports it; a node built against a shared or no OpenSSL may not.
const char* const kSymbols[] = {
    "TLS_server_method", "SSL_CTX_new", "SSL_CTX_free", "SSL_CTX_ctrl", "SSL_CTX_callback_ctrl",
    "SSL_CTX_set_options", "SSL_CTX_set_cipher_list", "SSL_CTX_set_ciphersuites", "SSL_CTX_use_certificate",
    "SSL_CTX_use_PrivateKey", "SSL_CTX_check_private_key", "SSL_CTX_set_alpn_select_cb",
    "SSL_CTX_set_session_id_context", "SSL_CTX_set_tlsext_ticket_key_evp_cb", "SSL_new", "SSL_free", "SSL_set_bio",
    "BIO_get_new_index", "BIO_meth_new", "BIO_meth_set_read", "BIO_meth_set_write", "BIO_meth_set_ctrl", "BIO_new",
    "BIO_set_data", "BIO_get_data", "BIO_set_init", "BIO_set_flags", "BIO_clear_flags",
    "SSL_set_accept_state", "SSL_do_handshake", "SSL_read", "SSL_write", "SSL_shutdown", "SSL_get_error",
    "SSL_pending", "SSL_get_servername", "SSL_set_SSL_CTX", "SSL_get_version", "SSL_session_reused",
    "SSL_get0_alpn_selected", "SSL_is_init_finished", "SSL_get_current_cipher", "SSL_CIPHER_get_name",
    "BIO_new_mem_buf", "BIO_free", "PEM_read_bio_X509", "PEM_read_bio_PrivateKey", "X509_free", "EVP_PKEY_free",
    "ERR_clear_error", "ERR_get_error", "ERR_peek_error", "ERR_peek_last_error", "ERR_error_string_n", "RAND_bytes",
    "EVP_EncryptInit_ex", "EVP_DecryptInit_ex", "EVP_aes_256_cbc", "EVP_CIPHER_fetch", "EVP_MAC_CTX_set_params",
    "OSSL_PARAM_construct_octet_string", "OSSL_PARAM_construct_utf8_string", "OSSL_PARAM_construct_end",
    "OpenSSL_version", "SSL_CTX_set_client_hello_cb", "SSL_client_hello_get0_ext", "SSL_version",
    // tls-relay.cc
    "SSL_set_read_ahead", "SSL_has_pending", "SSL_set_default_read_buffer_len"};

std::string CheckSymbols() {
  std::string missing;
  for (const char* name : kSymbols) {
    if (dlsym(RTLD_DEFAULT, name) == nullptr) missing += (missing.empty() ? "" : ", ") + std::string(name);
  }
  return missing.empty() ? "" : "OpenSSL functions not exported by this node: " + missing;
}

std::string OpenSslError(const char* what) {
  unsigned long e = ERR_peek_last_error();
  char text[256] = {0};
  if (e != 0) ERR_error_string_n(e, text, sizeof text);
  ERR_clear_error();
  return std::string(what) + (e != 0 ? std::string(": ") + text : std::string());
}

// --- session ticket keys: [0] seals new tickets, every key opens them (the previous one until it rotates out) ---

constexpr size_t kKeyName = 16;
constexpr size_t kKeyBytes = kKeyName + 32 + 32;  // name, HMAC-SHA256 key, AES-256-CBC key

struct TicketKey {
  unsigned char name[kKeyName];
  unsigned char hmac[32];
  unsigned char aes[32];
};

std::mutex ring_mu;
std::vector<TicketKey> ring;  // guarded by ring_mu; JS sets it (else one random key of this process)

// AES-256-CBC fetched from the provider once per process. EVP_aes_256_cbc() is OpenSSL 3's legacy table entry:
// each EncryptInit/DecryptInit with it fetches the provider's cipher again (a name lookup under locks), and every
// handshake that issues or opens a ticket made one or two of those. Null when the fetch fails: the legacy entry then.
const EVP_CIPHER* TicketCipher() {
  static const EVP_CIPHER* const fetched = EVP_CIPHER_fetch(nullptr, "AES-256-CBC", nullptr);
  return fetched != nullptr ? fetched : EVP_aes_256_cbc();
}

int OnTicketKey(SSL* ssl, unsigned char* key_name, unsigned char* iv, EVP_CIPHER_CTX* cctx, EVP_MAC_CTX* hctx, int enc) {
  std::lock_guard<std::mutex> lock(ring_mu);
  if (ring.empty()) {
    // no keys from JS yet (a test, an addon used alone): a random key of this process's own
    TicketKey own;
    if (RAND_bytes(reinterpret_cast<unsigned char*>(&own), sizeof own) != 1) return enc ? -1 : 0;
    ring.push_back(own);
  }
  const TicketKey* key = nullptr;
  bool current = false;
  if (enc) {
    key = &ring[0];
    current = true;
    std::memcpy(key_name, key->name, kKeyName);
    if (RAND_bytes(iv, 16) != 1) return -1;
  } else {
    for (size_t i = 0; i < ring.size(); i++) {
      if (std::memcmp(key_name, ring[i].name, kKeyName) == 0) {
        key = &ring[i];
        current = i == 0;
        break;
      }
    }
    if (key == nullptr) return 0;  // an unknown (rotated out) key: a full handshake, not an error
  }
  OSSL_PARAM params[3];
  params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, const_cast<unsigned char*>(key->hmac), sizeof key->hmac);
  params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>("SHA256"), 0);
  params[2] = OSSL_PARAM_construct_end();
  if (EVP_MAC_CTX_set_params(hctx, params) != 1) return -1;
  int ok = enc ? EVP_EncryptInit_ex(cctx, TicketCipher(), nullptr, key->aes, iv)
               : EVP_DecryptInit_ex(cctx, TicketCipher(), nullptr, key->aes, iv);
  if (ok != 1) return -1;
  // 2: valid, and OpenSSL issues a fresh ticket on this connection. Always so in TLS 1.3: a client uses each
  // ticket once (RFC 8446 §C.4), so a resumption that issued none would leave it a full handshake for its next
  // connection (nginx and HAProxy issue one). In TLS 1.2 only for a ticket sealed with an older key.
  if (enc) return 1;
  return current && SSL_version(ssl) < TLS1_3_VERSION ? 1 : 2;
}

// --- SNI and ALPN ---

std::string Normalize(std::string s) {
  for (char& c : s) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

// RFC 6125 §6.4.3, as SniSelector: exact name, then a wildcard over exactly one leftmost label, then the default.
int OnServerName(SSL* ssl, int* /*alert*/, void* arg) {
  const Server* server = static_cast<const Server*>(arg);
  const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (sni == nullptr) return SSL_TLSEXT_ERR_OK;
  std::string name = Normalize(sni);
  size_t chosen = 0;
  auto exact = server->exact.find(name);
  if (exact != server->exact.end()) {
    chosen = exact->second;
  } else {
    size_t dot = name.find('.');
    if (dot != std::string::npos && dot > 0) {
      auto wild = server->wildcard.find(name.substr(dot + 1));
      if (wild != server->wildcard.end()) chosen = wild->second;
    }
  }
  if (chosen != 0) SSL_set_SSL_CTX(ssl, server->ctxs[chosen]);
  return SSL_TLSEXT_ERR_OK;
}

// http/1.1 or nothing: a client that offers ALPN without it gets no_application_protocol (RFC 7301 §3.2), as
// Node's TLS server answers.
int OnAlpn(SSL* /*ssl*/, const unsigned char** out, unsigned char* outlen, const unsigned char* in, unsigned int inlen, void* /*arg*/) {
  static const unsigned char kHttp11[] = {'h', 't', 't', 'p', '/', '1', '.', '1'};
  for (unsigned int i = 0; i < inlen;) {
    unsigned int len = in[i];
    if (i + 1 + len > inlen) break;
    if (len == sizeof kHttp11 && std::memcmp(in + i + 1, kHttp11, len) == 0) {
      *out = in + i + 1;
      *outlen = static_cast<unsigned char>(len);
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + len;
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

int NoPassphrase(char* /*buf*/, int /*size*/, int /*rwflag*/, void* /*u*/) { return 0; }

// --- TLS-ALPN-01 (RFC 8737): challenge certificates by name, for ClientHellos that offer acme-tls/1 ---

// One pending challenge: a context holding the self-signed challenge certificate (SSL_set_SSL_CTX takes its own
// reference, so a handshake under way keeps it after the challenge is removed).
struct AlpnChallenge {
  SSL_CTX* ctx;
  explicit AlpnChallenge(SSL_CTX* c) : ctx(c) {}
  ~AlpnChallenge() { SSL_CTX_free(ctx); }
};

std::mutex challenges_mu;
std::unordered_map<std::string, std::shared_ptr<AlpnChallenge>> challenges;  // guarded by challenges_mu
// challenges.size(), read without the lock: the one branch every handshake pays when no challenge is pending
std::atomic<size_t> challenges_pending{0};

const unsigned char kAcmeTls1[] = {'a', 'c', 'm', 'e', '-', 't', 'l', 's', '/', '1'};

// RFC 7301 §3.1: ProtocolNameList is a 2-byte length, then 1-byte-length names, nothing after. True when one of
// them is acme-tls/1; a malformed list is no offer.
bool OffersAcmeTls(const unsigned char* p, size_t len) {
  if (len < 2 || (static_cast<size_t>(p[0]) << 8 | p[1]) != len - 2) return false;
  bool found = false;
  for (size_t i = 2; i < len;) {
    size_t n = p[i];
    if (n == 0 || i + 1 + n > len) return false;
    if (n == sizeof kAcmeTls1 && std::memcmp(p + i + 1, kAcmeTls1, n) == 0) found = true;
    i += 1 + n;
  }
  return found;
}

// RFC 6066 §3: ServerNameList is a 2-byte length, then (type, 2-byte length, name) entries; the host_name (type 0)
// entry, lower-cased, in *out. False when malformed or absent, or when the name holds a NUL.
bool HostName(const unsigned char* p, size_t len, std::string* out) {
  if (len < 2 || (static_cast<size_t>(p[0]) << 8 | p[1]) != len - 2) return false;
  for (size_t i = 2; i + 3 <= len;) {
    size_t n = static_cast<size_t>(p[i + 1]) << 8 | p[i + 2];
    if (n == 0 || i + 3 + n > len) return false;
    if (p[i] == 0) {
      if (std::memchr(p + i + 3, 0, n) != nullptr) return false;
      *out = Normalize(std::string(reinterpret_cast<const char*>(p + i + 3), n));
      return true;
    }
    i += 3 + n;
  }
  return false;
}

// Runs before SNI and ALPN (SSL_CTX_set_client_hello_cb): a ClientHello offering acme-tls/1 for a name with a
// pending challenge moves to that challenge's context, which answers it with acme-tls/1 and the challenge
// certificate. Every other ClientHello goes on untouched: one that offers acme-tls/1 for another name then fails
// in OnAlpn unless it offers http/1.1 too (RFC 8737 §3: never a normal certificate under acme-tls/1).
int OnClientHello(SSL* ssl, int* alert, void* /*arg*/) {
  if (challenges_pending.load(std::memory_order_relaxed) == 0) return SSL_CLIENT_HELLO_SUCCESS;
  const unsigned char* ext = nullptr;
  size_t len = 0;
  if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &ext, &len) != 1 || !OffersAcmeTls(ext, len)) return SSL_CLIENT_HELLO_SUCCESS;
  std::string name;
  if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &ext, &len) != 1 || !HostName(ext, len, &name)) return SSL_CLIENT_HELLO_SUCCESS;
  std::shared_ptr<AlpnChallenge> challenge;
  {
    std::lock_guard<std::mutex> lock(challenges_mu);
    auto it = challenges.find(name);
    if (it != challenges.end()) challenge = it->second;
  }
  if (challenge == nullptr) return SSL_CLIENT_HELLO_SUCCESS;
  if (SSL_set_SSL_CTX(ssl, challenge->ctx) != challenge->ctx) {
    *alert = SSL_AD_INTERNAL_ERROR;
    return SSL_CLIENT_HELLO_ERROR;
  }
  return SSL_CLIENT_HELLO_SUCCESS;
}

// The challenge context's own SNI callback: keeps it (without one, OpenSSL would call the listener's, which
// would move the handshake back to the normal certificate).
int KeepChallenge(SSL* /*ssl*/, int* /*alert*/, void* /*arg*/) { return SSL_TLSEXT_ERR_OK; }

// RFC 8737 §3: the challenge handshake negotiates acme-tls/1 and nothing else.
int OnAcmeAlpn(SSL* /*ssl*/, const unsigned char** out, unsigned char* outlen, const unsigned char* in, unsigned int inlen, void* /*arg*/) {
  for (unsigned int i = 0; i < inlen;) {
    unsigned int len = in[i];
    if (i + 1 + len > inlen) break;
    if (len == sizeof kAcmeTls1 && std::memcmp(in + i + 1, kAcmeTls1, len) == 0) {
      *out = in + i + 1;
      *outlen = static_cast<unsigned char>(len);
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + len;
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}


struct Options {
  int min_version;
  std::string cipher_list;   // TLS 1.2 ciphers
  std::string ciphersuites;  // TLS 1.3 suites
};

SSL_CTX* NewContext(const Options& o, const std::string& cert_pem, const std::string& key_pem, std::string* error) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == nullptr) {
    *error = OpenSslError("SSL_CTX_new");
    return nullptr;
  }
  auto fail = [&](const char* what) {
    *error = OpenSslError(what);
    SSL_CTX_free(ctx);
    return nullptr;
  };
  SSL_CTX_set_min_proto_version(ctx, o.min_version);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  // No renegotiation (a handshake per request for the client's asking); the client's cipher order wins (no
  // SSL_OP_CIPHER_SERVER_PREFERENCE: every suite on the list is strong, and a client knows which is cheap for it,
  // e.g. browsers put AES-128-GCM first, whose TLS 1.3 key schedule runs on SHA-256; nginx's default, Mozilla's
  // intermediate profile); a FIN without close_notify ends the stream like a FIN (HTTP/1.1 framing never relies on
  // TLS closure).
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF);
  // An idle connection holds no record buffers; writes report each record sent and may retry from a moved buffer.
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (!o.cipher_list.empty() && SSL_CTX_set_cipher_list(ctx, o.cipher_list.c_str()) != 1) return fail("ciphers");
  if (!o.ciphersuites.empty() && SSL_CTX_set_ciphersuites(ctx, o.ciphersuites.c_str()) != 1) return fail("TLS 1.3 ciphersuites");
  // Stateless tickets only: a server-side cache would be one per worker and grow per client.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  static const unsigned char kSid[] = {'p', 'o', 'r', 't', 'i', 'c', 'o'};
  SSL_CTX_set_session_id_context(ctx, kSid, sizeof kSid);
  SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, OnTicketKey);
  SSL_CTX_set_alpn_select_cb(ctx, OnAlpn, nullptr);

  BIO* bio = BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size()));
  if (bio == nullptr) return fail("BIO_new_mem_buf");
  X509* leaf = PEM_read_bio_X509(bio, nullptr, NoPassphrase, nullptr);
  if (leaf == nullptr || SSL_CTX_use_certificate(ctx, leaf) != 1) {
    if (leaf != nullptr) X509_free(leaf);
    BIO_free(bio);
    return fail("certificate");
  }
  X509_free(leaf);
  // The rest of the file is the chain, sent after the leaf.
  for (X509* ca = PEM_read_bio_X509(bio, nullptr, NoPassphrase, nullptr); ca != nullptr; ca = PEM_read_bio_X509(bio, nullptr, NoPassphrase, nullptr)) {
    if (SSL_CTX_add0_chain_cert(ctx, ca) != 1) {
      X509_free(ca);
      BIO_free(bio);
      return fail("certificate chain");
    }
  }
  ERR_clear_error();  // the loop ends on "no start line"
  BIO_free(bio);
  bio = BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size()));
  if (bio == nullptr) return fail("BIO_new_mem_buf");
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, NoPassphrase, nullptr);
  BIO_free(bio);
  if (key == nullptr) return fail("private key");
  int used = SSL_CTX_use_PrivateKey(ctx, key);
  EVP_PKEY_free(key);
  if (used != 1 || SSL_CTX_check_private_key(ctx) != 1) return fail("private key does not match the certificate");
  return ctx;
}

std::mutex servers_mu;
std::unordered_map<int32_t, std::shared_ptr<Server>> servers;  // guarded by servers_mu
int32_t next_server = 1;

std::shared_ptr<Server> FindServer(int32_t id) {
  std::lock_guard<std::mutex> lock(servers_mu);
  auto it = servers.find(id);
  return it == servers.end() ? nullptr : it->second;
}

void CheckAvailable(Napi::Env env) {
  if (!Unavailable().empty()) throw Napi::Error::New(env, Unavailable());
}

// tlsServerNew({ certs: [{ cert: Buffer, key: Buffer, names: string[] }], minVersion: 'TLSv1.2'|'TLSv1.3',
// ciphers: string }) -> id. Throws with OpenSSL's reason (and the certificate's index) when a pair is unusable.
Napi::Value ServerNew(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckAvailable(env);
  if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "tlsServerNew({ certs, minVersion, ciphers })");
  Napi::Object o = info[0].As<Napi::Object>();
  Options opts;
  std::string min = o.Get("minVersion").ToString().Utf8Value();
  if (min == "TLSv1.2") opts.min_version = TLS1_2_VERSION;
  else if (min == "TLSv1.3") opts.min_version = TLS1_3_VERSION;
  else throw Napi::TypeError::New(env, "minVersion must be TLSv1.2 or TLSv1.3");
  std::string ciphers = o.Get("ciphers").IsString() ? o.Get("ciphers").As<Napi::String>().Utf8Value() : "";
  // Node's cipher string names both kinds; OpenSSL takes TLS 1.3 suites apart
  size_t start = 0;
  while (start <= ciphers.size()) {
    size_t end = ciphers.find(':', start);
    if (end == std::string::npos) end = ciphers.size();
    std::string item = ciphers.substr(start, end - start);
    if (!item.empty()) {
      std::string& to = item.rfind("TLS_", 0) == 0 ? opts.ciphersuites : opts.cipher_list;
      to += (to.empty() ? "" : ":") + item;
    }
    start = end + 1;
  }
  Napi::Value certsValue = o.Get("certs");
  if (!certsValue.IsArray() || certsValue.As<Napi::Array>().Length() == 0) throw Napi::TypeError::New(env, "certs must be a non-empty array");
  Napi::Array certs = certsValue.As<Napi::Array>();
  auto server = std::make_shared<Server>();
  for (uint32_t i = 0; i < certs.Length(); i++) {
    Napi::Object c = certs.Get(i).As<Napi::Object>();
    Napi::Buffer<char> cert = c.Get("cert").As<Napi::Buffer<char>>();
    Napi::Buffer<char> key = c.Get("key").As<Napi::Buffer<char>>();
    std::string error;
    SSL_CTX* ctx = NewContext(opts, std::string(cert.Data(), cert.Length()), std::string(key.Data(), key.Length()), &error);
    if (ctx == nullptr) throw Napi::Error::New(env, "certificate " + std::to_string(i) + ": " + error);
    server->ctxs.push_back(ctx);
    Napi::Array names = c.Get("names").As<Napi::Array>();
    for (uint32_t j = 0; j < names.Length(); j++) {
      std::string name = Normalize(names.Get(j).ToString().Utf8Value().c_str());
      // the earlier certificate keeps a name two claim (SniSelector's rule)
      if (name.rfind("*.", 0) == 0) server->wildcard.emplace(name.substr(2), i);
      else server->exact.emplace(name, i);
    }
  }
  // The callback sits on the context every session starts with: the first certificate's.
  SSL_CTX_set_tlsext_servername_callback(server->ctxs[0], OnServerName);
  SSL_CTX_set_tlsext_servername_arg(server->ctxs[0], server.get());
  // Only on listeners of a config that answers TLS-ALPN-01: the others never look at a ClientHello's ALPN here.
  if (o.Get("acmeAlpn").ToBoolean().Value()) SSL_CTX_set_client_hello_cb(server->ctxs[0], OnClientHello, nullptr);
  std::lock_guard<std::mutex> lock(servers_mu);
  int32_t id = next_server++;
  servers.emplace(id, std::move(server));
  return Napi::Number::New(env, id);
}

// tlsServerFree(id): no new session starts on it; live sessions keep it until they end.
Napi::Value ServerFree(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "tlsServerFree(id)");
  std::lock_guard<std::mutex> lock(servers_mu);
  servers.erase(info[0].As<Napi::Number>().Int32Value());
  return info.Env().Undefined();
}

// tlsSetTicketKeys(keys: Uint8Array of n * 80 bytes): the first seals new tickets; all open them.
Napi::Value SetTicketKeys(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray()) throw Napi::TypeError::New(env, "tlsSetTicketKeys(keys: Uint8Array)");
  Napi::Uint8Array bytes = info[0].As<Napi::Uint8Array>();
  size_t n = bytes.ByteLength();
  if (n == 0 || n % kKeyBytes != 0) throw Napi::RangeError::New(env, "ticket keys must be a non-empty multiple of 80 bytes");
  std::vector<TicketKey> keys(n / kKeyBytes);
  for (size_t i = 0; i < keys.size(); i++) {
    const uint8_t* p = bytes.Data() + i * kKeyBytes;
    std::memcpy(keys[i].name, p, kKeyName);
    std::memcpy(keys[i].hmac, p + kKeyName, 32);
    std::memcpy(keys[i].aes, p + kKeyName + 32, 32);
  }
  std::lock_guard<std::mutex> lock(ring_mu);
  ring.swap(keys);
  return env.Undefined();
}

// tlsSetAlpnChallenge(name, cert: string | null, key: string | null): serves the PEM pair as the TLS-ALPN-01
// challenge certificate for `name` on every server made with acmeAlpn; null removes it. Throws when OpenSSL
// refuses the pair.
Napi::Value SetAlpnChallenge(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckAvailable(env);
  if (info.Length() < 3 || !info[0].IsString()) throw Napi::TypeError::New(env, "tlsSetAlpnChallenge(name, cert, key)");
  std::string name = Normalize(info[0].As<Napi::String>().Utf8Value());
  if (info[1].IsNull() || info[2].IsNull()) {
    std::lock_guard<std::mutex> lock(challenges_mu);
    challenges.erase(name);
    challenges_pending.store(challenges.size(), std::memory_order_relaxed);
    return env.Undefined();
  }
  if (!info[1].IsString() || !info[2].IsString()) throw Napi::TypeError::New(env, "tlsSetAlpnChallenge(name, cert: string, key: string)");
  Options opts{TLS1_2_VERSION, "", ""};
  std::string error;
  SSL_CTX* ctx = NewContext(opts, info[1].As<Napi::String>().Utf8Value(), info[2].As<Napi::String>().Utf8Value(), &error);
  if (ctx == nullptr) throw Napi::Error::New(env, "challenge certificate: " + error);
  SSL_CTX_set_alpn_select_cb(ctx, OnAcmeAlpn, nullptr);
  SSL_CTX_set_tlsext_servername_callback(ctx, KeepChallenge);
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);  // a validation connection is never resumed
  auto challenge = std::make_shared<AlpnChallenge>(ctx);
  std::lock_guard<std::mutex> lock(challenges_mu);
  challenges[name] = std::move(challenge);
  challenges_pending.store(challenges.size(), std::memory_order_relaxed);
  return env.Undefined();
}

// Handshakes completed by this process's sessions (any thread), for TrimIdle.
std::atomic<uint64_t> handshakes{0};

// A handshake allocates some 50 KiB that it frees at its end (the handshake buffer, record buffers, key shares,
// the certificate messages) between the allocations the connection keeps (the SSL, its ciphers and session).
// After a burst of handshakes the freed memory lies in holes of malloc's heap that free() does not return to the
// system: ~3 KiB of RSS per idle TLS connection after 3,000 handshakes 500 at a time. malloc_trim(0) gives back
// the whole free pages of those holes. Done once a burst has ended (no handshake for kTrimQuietMs after at least
// kTrimBurst), or every kTrimEveryMs while handshakes go on; the JS thread asks often (tlsTrimIdle), each ask
// costs two atomic loads when there is nothing to do.
constexpr uint64_t kTrimQuietMs = 1000;
constexpr uint64_t kTrimBurst = 64;
constexpr uint64_t kTrimEveryMs = 30000;
struct Trim {
  uint64_t seen = 0;         // handshakes at the last ask
  uint64_t changed_ms = 0;   // when the count last moved
  uint64_t trimmed = 0;      // handshakes at the last trim
  uint64_t trimmed_ms = 0;
};
Trim trim;  // the JS thread only

uint64_t MonotonicMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

// This process's resident memory in KiB (/proc/self/statm), -1 when unreadable.
int64_t RssKiB() {
  FILE* f = fopen("/proc/self/statm", "r");
  if (f == nullptr) return -1;
  long size = 0, resident = 0;
  int got = fscanf(f, "%ld %ld", &size, &resident);
  fclose(f);
  return got == 2 ? static_cast<int64_t>(resident) * (sysconf(_SC_PAGESIZE) / 1024) : -1;
}

// tlsTrimIdle() -> { handshakes, freedKiB, ms } when this call trimmed (handshakes since the last trim), else undefined
Napi::Value TrimIdle(const Napi::CallbackInfo& info) {
  uint64_t h = handshakes.load(std::memory_order_relaxed);
  uint64_t now = MonotonicMs();
  if (trim.trimmed_ms == 0) trim.trimmed_ms = now;  // the first ask starts the clock of kTrimEveryMs
  if (h != trim.seen) {
    trim.seen = h;
    trim.changed_ms = now;
  }
  uint64_t since = h - trim.trimmed;
  bool burst_over = since >= kTrimBurst && now - trim.changed_ms >= kTrimQuietMs;
  bool overdue = since > 0 && now - trim.trimmed_ms >= kTrimEveryMs;
  if (!burst_over && !overdue) return info.Env().Undefined();
  int64_t before = RssKiB();
  timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
#ifdef __GLIBC__
  malloc_trim(0);
#endif
  clock_gettime(CLOCK_MONOTONIC, &t1);
  int64_t after = RssKiB();
  trim.trimmed = h;
  trim.trimmed_ms = now;
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("handshakes", Napi::Number::New(info.Env(), static_cast<double>(since)));
  o.Set("freedKiB", Napi::Number::New(info.Env(), before < 0 || after < 0 ? 0.0 : static_cast<double>(before - after)));
  // what the trim cost this thread (malloc's arenas are locked meanwhile): for the log
  o.Set("ms", Napi::Number::New(info.Env(), static_cast<double>((t1.tv_sec - t0.tv_sec) * 1000000 + (t1.tv_nsec - t0.tv_nsec) / 1000) / 1000.0));
  return o;
}

// tlsStatus() -> { available, reason?, openssl }
Napi::Value Status(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("available", Napi::Boolean::New(env, Unavailable().empty()));
  if (!Unavailable().empty()) o.Set("reason", Napi::String::New(env, Unavailable()));
  else o.Set("openssl", Napi::String::New(env, OpenSSL_version(OPENSSL_VERSION)));
  return o;
}

// --- the socket BIO: recv/send on the session's fd, noting whether the last recv drained the socket ---

int SocketRead(BIO* bio, char* buf, int len) {
  Session* session = static_cast<Session*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  ssize_t n;
  do n = recv(session->fd(), buf, static_cast<size_t>(len), 0);
  while (n < 0 && errno == EINTR);
  // shorter than asked (or nothing at all): the socket holds nothing more right now
  session->recv_drained = n < len;
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) BIO_set_retry_read(bio);
  return n < 0 ? -1 : static_cast<int>(n);
}

int SocketWrite(BIO* bio, const char* buf, int len) {
  Session* session = static_cast<Session*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  ssize_t n;
  do n = send(session->fd(), buf, static_cast<size_t>(len), MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) BIO_set_retry_write(bio);
  return n < 0 ? -1 : static_cast<int>(n);
}

long SocketCtrl(BIO* /*bio*/, int cmd, long /*num*/, void* /*ptr*/) {
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;  // nothing is buffered here; no other control applies to a socket
}

// Made once per process (OpenSSL keeps methods until exit); null when OpenSSL refuses.
BIO_METHOD* SocketMethod() {
  static BIO_METHOD* const method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "portico socket");
    if (m == nullptr) return m;
    BIO_meth_set_read(m, SocketRead);
    BIO_meth_set_write(m, SocketWrite);
    BIO_meth_set_ctrl(m, SocketCtrl);
    return m;
  }();
  return method;
}

}  // namespace

const std::string& Unavailable() {
  static const std::string reason = CheckSymbols();
  return reason;
}

Session* Session::New(int server_id, int fd, std::string* error) {
  if (!Unavailable().empty()) {
    *error = Unavailable();
    return nullptr;
  }
  std::shared_ptr<Server> server = FindServer(server_id);
  if (server == nullptr) {
    *error = "unknown TLS server";
    return nullptr;
  }
  SSL* ssl = SSL_new(server->ctxs[0]);
  BIO_METHOD* method = SocketMethod();
  BIO* bio = ssl != nullptr && method != nullptr ? BIO_new(method) : nullptr;
  if (bio == nullptr) {
    *error = OpenSslError("SSL_new");
    if (ssl != nullptr) SSL_free(ssl);
    return nullptr;
  }
  auto* session = new Session(std::move(server), ssl, fd);
  BIO_set_data(bio, session);
  BIO_set_init(bio, 1);
  SSL_set_bio(ssl, bio, bio);  // the SSL owns the BIO (one reference, read and write)
  SSL_set_accept_state(ssl);
  // A read takes whatever the socket holds (up to a record buffer) in one recv, not each record's header and then
  // its body: a keep-alive request costs one read(2) plus the one that finds the socket empty instead of three, a
  // handshake four instead of eleven. The price: records can wait inside OpenSSL, unseen by epoll (Pending()).
  SSL_set_read_ahead(ssl, 1);
  return session;
}

Session::~Session() { SSL_free(ssl_); }

Io Session::Fail(int ret) {
  int e = SSL_get_error(ssl_, ret);
  switch (e) {
    case SSL_ERROR_WANT_READ: return Io::kWantRead;
    case SSL_ERROR_WANT_WRITE: return Io::kWantWrite;
    case SSL_ERROR_ZERO_RETURN: return Io::kEof;
    case SSL_ERROR_SYSCALL:
      if (errno == 0 && ERR_peek_last_error() == 0) return Io::kEof;
      sys_errno_ = errno != 0 ? errno : EPROTO;
      error_ = errno != 0 ? std::string(strerror(errno)) : OpenSslError("TLS");
      ERR_clear_error();
      return Io::kError;
    default:
      sys_errno_ = EPROTO;
      error_ = OpenSslError("TLS");
      return Io::kError;
  }
}

// SSL_get_error reads this thread's error queue, so it must be empty before each call. ERR_clear_error empties it
// at some 770 instructions even when it is empty (it frees each of the queue's 16 slots), which a keep-alive
// request paid twice (one SSL_read, one SSL_write; callgrind); ERR_peek_error finds the queue empty in a fraction
// of that, and it nearly always is (Fail() and OpenSslError clear what they read).
namespace {
void ClearErrors() {
  if (ERR_peek_error() != 0) ERR_clear_error();
}
}  // namespace

Io Session::Handshake() {
  ClearErrors();
  errno = 0;
  int r = SSL_do_handshake(ssl_);
  if (r != 1) return Fail(r);
  handshakes.fetch_add(1, std::memory_order_relaxed);
  return Io::kOk;
}

Io Session::Read(char* buf, size_t len, size_t* got) {
  ClearErrors();
  errno = 0;
  int r = SSL_read(ssl_, buf, static_cast<int>(len > 0x40000000 ? 0x40000000 : len));
  if (r > 0) {
    *got = static_cast<size_t>(r);
    return Io::kOk;
  }
  *got = 0;
  return Fail(r);
}

Io Session::Write(const char* p, size_t len, size_t* wrote) {
  *wrote = 0;
  while (*wrote < len) {
    size_t left = len - *wrote;
    ClearErrors();
    errno = 0;
    int r = SSL_write(ssl_, p + *wrote, static_cast<int>(left > 0x40000000 ? 0x40000000 : left));
    if (r > 0) {
      *wrote += static_cast<size_t>(r);
      continue;
    }
    Io io = Fail(r);
    // progress made: the caller queues the rest and retries from there
    if ((io == Io::kWantWrite || io == Io::kWantRead) && *wrote > 0) return Io::kOk;
    return io;
  }
  return Io::kOk;
}

Io Session::Shutdown() {
  if (shutdown_sent_ || SSL_is_init_finished(ssl_) != 1) return Io::kOk;
  ClearErrors();
  errno = 0;
  int r = SSL_shutdown(ssl_);
  if (r >= 0) {
    shutdown_sent_ = true;
    return Io::kOk;
  }
  Io io = Fail(r);
  if (io == Io::kWantWrite) return io;
  shutdown_sent_ = true;  // the peer is gone or the session failed: the FIN follows anyway
  return Io::kOk;
}

bool Session::Pending() const { return SSL_has_pending(ssl_) == 1; }

bool Session::Drained() const { return recv_drained && SSL_has_pending(ssl_) != 1; }

Napi::Object Info(Napi::Env env, const Session& session) {
  SSL* ssl = session.ssl();
  Napi::Object o = Napi::Object::New(env);
  o.Set("version", Napi::String::New(env, SSL_get_version(ssl)));
  const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl);
  o.Set("cipher", cipher == nullptr ? env.Null() : Napi::String::New(env, SSL_CIPHER_get_name(cipher)));
  const unsigned char* alpn = nullptr;
  unsigned int alpn_len = 0;
  SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
  o.Set("alpn", alpn_len == 0 ? env.Null() : Napi::String::New(env, reinterpret_cast<const char*>(alpn), alpn_len));
  const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  o.Set("servername", sni == nullptr ? env.Null() : Napi::String::New(env, sni));
  o.Set("resumed", Napi::Boolean::New(env, SSL_session_reused(ssl) == 1));
  return o;
}

void Register(Napi::Env env, Napi::Object exports) {
  exports.Set("tlsStatus", Napi::Function::New(env, Status, "tlsStatus"));
  exports.Set("tlsTrimIdle", Napi::Function::New(env, TrimIdle, "tlsTrimIdle"));
  exports.Set("tlsServerNew", Napi::Function::New(env, ServerNew, "tlsServerNew"));
  exports.Set("tlsServerFree", Napi::Function::New(env, ServerFree, "tlsServerFree"));
  exports.Set("tlsSetTicketKeys", Napi::Function::New(env, SetTicketKeys, "tlsSetTicketKeys"));
  exports.Set("tlsSetAlpnChallenge", Napi::Function::New(env, SetAlpnChallenge, "tlsSetAlpnChallenge"));
}

}  // namespace portico::tls
