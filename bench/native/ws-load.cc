// Native WebSocket load generator for `portico bench` (bench/lib/loads.ts): the JS client (bench/peers/ws-load.ts)
// costs as much CPU per echoed message as the proxies it measures, on a core it shares with the backend. One
// thread, one epoll set, non-blocking sockets, every buffer and every wait bounded; a server's bad frame ends the
// run with a clear error (exit 3), never a crash. Built by scripts/build-bench-tools.js (g++, OpenSSL when linkable
// for wss://). Not part of Portico: nothing in src/ uses it.
//
//   ws-load --port P [--host 127.0.0.1] [--path /ws] [--authority NAME] [--tls] [--connections N]
//           [--mode echo|upgrade|recv] [--size B] [--duration S] [--count K] [--connect-timeout S] [--sync]
//     echo:    N WebSockets, each keeps one masked binary message in flight (send, wait for the whole echo, check
//              it byte for byte, resend); latency = send to echo, in a bounded histogram.
//     upgrade: N loops of connect, [TLS,] upgrade (101, Upgrade and Sec-WebSocket-Accept checked), Close, next;
//              latency = connect to 101.
//     recv:    N WebSockets that send nothing and count the messages the server pushes (each must be a binary
//              message of --size bytes). With --publish-port it also drives the pushes, closed loop: --inflight
//              keep-alive connections POST --size bytes to --publish-path (with --publish-header), and a publish
//              is sent only while fewer than --inflight publishes are undelivered (received / N), so the rate is
//              what the server and proxy deliver, not a backlog; after 200 ms without a delivery one more goes.
//   Ends at --duration seconds or after --count units, whichever first. stdout, one JSON line each, as the JS
//   client: {"event":"ready"} once connected, {"event":"start"}, {"event":"stop"}, {"event":"result",...}; with
//   --sync it waits for "go" on stdin after ready and "done" after stop (the harness reads CPU counters there).
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#ifdef WSLOAD_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#endif

namespace {

constexpr size_t kMaxHead = 16 * 1024;
constexpr size_t kMaxMessage = 1024 * 1024;  // a server message larger than this fails the run
constexpr int kMaxConnections = 20000;
// Handshakes in progress at once (connect to 101): a listen backlog is finite, and a proxy bounds its pending
// upstream connects (Portico: max_connections + queue, 503 beyond).
constexpr int kMaxConnecting = 128;
constexpr int kMaxEvents = 512;
const char* kGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

uint64_t now_us() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000ull + uint64_t(ts.tv_nsec) / 1000;
}

// ---- SHA-1 (FIPS 180-4) and base64: the Sec-WebSocket-Accept check, without a crypto library -------------
struct Sha1 {
  uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
  static uint32_t rol(uint32_t v, int n) { return (v << n) | (v >> (32 - n)); }
  void block(const uint8_t* p) {
    uint32_t w[80];
    for (int i = 0; i < 16; i++) w[i] = uint32_t(p[4 * i]) << 24 | uint32_t(p[4 * i + 1]) << 16 | uint32_t(p[4 * i + 2]) << 8 | p[4 * i + 3];
    for (int i = 16; i < 80; i++) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
      uint32_t f, k;
      if (i < 20) f = (b & c) | (~b & d), k = 0x5A827999;
      else if (i < 40) f = b ^ c ^ d, k = 0x6ED9EBA1;
      else if (i < 60) f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDC;
      else f = b ^ c ^ d, k = 0xCA62C1D6;
      uint32_t t = rol(a, 5) + f + e + k + w[i];
      e = d, d = c, c = rol(b, 30), b = a, a = t;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
  }
  void digest(const std::string& msg, uint8_t out[20]) {
    std::string m = msg;
    uint64_t bits = uint64_t(msg.size()) * 8;
    m.push_back(char(0x80));
    while (m.size() % 64 != 56) m.push_back('\0');
    for (int i = 7; i >= 0; i--) m.push_back(char(bits >> (8 * i)));
    for (size_t i = 0; i < m.size(); i += 64) block(reinterpret_cast<const uint8_t*>(m.data() + i));
    for (int i = 0; i < 5; i++) for (int j = 0; j < 4; j++) out[4 * i + j] = uint8_t(h[i] >> (24 - 8 * j));
  }
};

std::string base64(const uint8_t* p, size_t n) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string s;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = uint32_t(p[i]) << 16 | (i + 1 < n ? uint32_t(p[i + 1]) << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
    s += t[v >> 18 & 63];
    s += t[v >> 12 & 63];
    s += i + 1 < n ? t[v >> 6 & 63] : '=';
    s += i + 2 < n ? t[v & 63] : '=';
  }
  return s;
}

// xorshift64*: masks and keys (RFC 6455 §5.3 asks for unpredictable masks; a seeded PRNG per run is that here).
uint64_t g_rng = 0;
uint32_t rnd32() {
  g_rng ^= g_rng >> 12, g_rng ^= g_rng << 25, g_rng ^= g_rng >> 27;
  return uint32_t((g_rng * 2685821657736338717ull) >> 32);
}

// ---- latency histogram: 1 µs resolution below 1024 µs, then 64 buckets per power of two (< 1.6% error) -----
struct Histogram {
  static constexpr int kLinear = 1024, kSub = 64, kOctaves = 32;
  std::vector<uint64_t> b = std::vector<uint64_t>(kLinear + kSub * kOctaves, 0);
  uint64_t n = 0, sum = 0, max = 0;
  static int index(uint64_t v) {
    if (v < kLinear) return int(v);
    int msb = 63 - __builtin_clzll(v);  // >= 10
    int oct = msb - 10;
    if (oct >= kOctaves) return kLinear + kSub * kOctaves - 1;
    return kLinear + oct * kSub + int((v >> (msb - 6)) & (kSub - 1));
  }
  static uint64_t value(int i) {
    if (i < kLinear) return uint64_t(i);
    int oct = (i - kLinear) / kSub, sub = (i - kLinear) % kSub;
    int msb = oct + 10;
    return (uint64_t(1) << msb) + (uint64_t(sub) << (msb - 6));
  }
  void add(uint64_t v) {
    b[size_t(index(v))]++;
    n++, sum += v;
    if (v > max) max = v;
  }
  uint64_t pct(double p) const {
    if (n == 0) return 0;
    uint64_t want = uint64_t(p * double(n) + 0.5);
    if (want < 1) want = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < b.size(); i++) {
      seen += b[i];
      if (seen >= want) return std::min(value(int(i)), max);
    }
    return max;
  }
};

enum class Mode { Echo, Upgrade, Recv };

struct Options {
  std::string host = "127.0.0.1", path = "/ws", authority;
  int port = 0, connections = 100, size = 32;
  Mode mode = Mode::Echo;
  double durationS = 10, connectTimeoutS = 10;
  uint64_t count = 0;  // 0: no count bound
  bool tls = false, sync = false;
  int publishPort = 0, inflight = 4;
  std::string publishPath = "/publish", publishHeader;
};

enum class State { Connecting, TlsHandshake, Head, Open, Closing, Dead };

struct Conn {
  int fd = -1;
  int slot = 0;
  State state = State::Connecting;
#ifdef WSLOAD_TLS
  SSL* ssl = nullptr;
#endif
  std::string accept;  // the Sec-WebSocket-Accept the server must answer
  std::vector<uint8_t> out;
  size_t outOff = 0;
  std::vector<uint8_t> in;  // unparsed bytes (head, then frames)
  std::vector<uint8_t> msg;  // a fragmented message being reassembled
  bool inMessage = false;
  uint8_t msgOpcode = 0;
  std::vector<uint8_t> payload;  // echo: what each message carries
  uint64_t startedUs = 0;  // connect (upgrade latency) or send (echo latency)
  uint64_t deadlineUs = 0;  // connect/handshake/close phase deadline
  bool closeSent = false, closeReceived = false;
  bool publisher = false, busy = false;  // a publish connection (plain HTTP/1.1), a POST awaiting its answer
};

struct Run {
  Options o;
  int ep = -1;
  sockaddr_in addr{};
  std::vector<Conn*> conns;  // echo/recv: the open set; upgrade: one per loop slot (nullptr between)
  std::vector<Conn*> closing;  // upgrade: connections finishing their close handshake
  int connecting = 0, opened = 0, connectFailed = 0;
  std::set<std::string> reasons;
  bool running = false, ended = false;
  uint64_t messages = 0, verified = 0, mismatches = 0, lost = 0, protocolErrors = 0, closedClean = 0;
  std::vector<Conn*> pubs;
  std::string pubRequest;
  uint64_t published = 0, answered = 0, stalls = 0, lastDeliveryUs = 0, lastPublishUs = 0;
  Histogram hist;
  std::string fatal;  // set once: the run's failure
  std::string stdinLine;
  std::vector<std::string> stdinWords;
  bool stdinEof = false;
#ifdef WSLOAD_TLS
  SSL_CTX* ctx = nullptr;
#endif
};

Run R;

void emit(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  putchar('\n');
  fflush(stdout);
}

std::string json_escape(const std::string& s) {
  std::string r;
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') r += '\\', r += char(c);
    else if (c < 0x20 || c >= 0x7f) { char b[8]; snprintf(b, sizeof b, "\\u%04x", c); r += b; }
    else r += char(c);
  }
  return r;
}

void fail_run(const Conn* c, const std::string& why) {
  if (!R.fatal.empty()) return;
  R.fatal = c == nullptr ? why : "connection " + std::to_string(c->slot) + ": " + why;
  fprintf(stderr, "ws-load: %s\n", R.fatal.c_str());
}

void note_reason(const std::string& why) {
  if (R.reasons.size() < 5) R.reasons.insert(why);
}

// ---- socket I/O, plain or TLS: >0 bytes, 0 EOF, -1 would block, -2 error (errno or TLS error in `why`) -------
ssize_t io_read(Conn* c, uint8_t* buf, size_t n, std::string& why) {
#ifdef WSLOAD_TLS
  if (c->ssl != nullptr) {
    int r = SSL_read(c->ssl, buf, int(n));
    if (r > 0) return r;
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return -1;
    if (e == SSL_ERROR_ZERO_RETURN) return 0;
    if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && (r == 0 || errno == ECONNRESET)) return 0;
    char b[256];
    ERR_error_string_n(ERR_get_error(), b, sizeof b);
    why = std::string("TLS read: ") + b;
    ERR_clear_error();
    return -2;
  }
#endif
  ssize_t r = read(c->fd, buf, n);
  if (r >= 0) return r;
  if (errno == EAGAIN || errno == EINTR) return -1;
  if (errno == ECONNRESET) return 0;
  why = strerror(errno);
  return -2;
}

ssize_t io_write(Conn* c, const uint8_t* buf, size_t n, std::string& why) {
#ifdef WSLOAD_TLS
  if (c->ssl != nullptr) {
    int r = SSL_write(c->ssl, buf, int(n));
    if (r > 0) return r;
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return -1;
    char b[256];
    ERR_error_string_n(ERR_get_error(), b, sizeof b);
    why = std::string("TLS write: ") + b;
    ERR_clear_error();
    return -2;
  }
#endif
  ssize_t r = send(c->fd, buf, n, MSG_NOSIGNAL);
  if (r >= 0) return r;
  if (errno == EAGAIN || errno == EINTR) return -1;
  why = strerror(errno);
  return -2;
}

void destroy(Conn* c) {
  if (c->state == State::Dead) return;
  c->state = State::Dead;
#ifdef WSLOAD_TLS
  if (c->ssl != nullptr) SSL_free(c->ssl), c->ssl = nullptr;
#endif
  if (c->fd >= 0) close(c->fd), c->fd = -1;
}

// A masked client frame (RFC 6455 §5.2, §5.3), FIN set, a fresh mask each time.
void put_frame(Conn* c, uint8_t opcode, const uint8_t* p, size_t n) {
  auto& o = c->out;
  if (c->outOff > 0 && c->outOff == o.size()) o.clear(), c->outOff = 0;
  o.push_back(uint8_t(0x80 | opcode));
  if (n < 126) o.push_back(uint8_t(0x80 | n));
  else if (n < 65536) o.push_back(0x80 | 126), o.push_back(uint8_t(n >> 8)), o.push_back(uint8_t(n));
  else {
    o.push_back(0x80 | 127);
    for (int i = 7; i >= 0; i--) o.push_back(uint8_t(uint64_t(n) >> (8 * i)));
  }
  uint32_t m = rnd32();
  uint8_t mask[4] = {uint8_t(m >> 24), uint8_t(m >> 16), uint8_t(m >> 8), uint8_t(m)};
  o.insert(o.end(), mask, mask + 4);
  size_t at = o.size();
  o.resize(at + n);
  for (size_t i = 0; i < n; i++) o[at + i] = p[i] ^ mask[i & 3];
}

void send_close(Conn* c, uint16_t code) {
  if (c->closeSent) return;
  c->closeSent = true;
  uint8_t b[2] = {uint8_t(code >> 8), uint8_t(code)};
  put_frame(c, 0x8, b, 2);
}

bool flush(Conn* c) {
  while (c->outOff < c->out.size()) {
    std::string why;
    ssize_t w = io_write(c, c->out.data() + c->outOff, c->out.size() - c->outOff, why);
    if (w == -1) return true;
    if (w < 0) { note_reason(why); return false; }
    c->outOff += size_t(w);
  }
  c->out.clear(), c->outOff = 0;
  return true;
}

void lose(Conn* c, const std::string& why);

void send_echo(Conn* c) {
  c->startedUs = now_us();
  put_frame(c, 0x2, c->payload.data(), c->payload.size());
}

/** One complete message from the server. */
void on_message(Conn* c, uint8_t opcode, const uint8_t* p, size_t n) {
  if (R.o.mode == Mode::Recv) {
    if (opcode != 0x2 || n != size_t(R.o.size)) {
      R.mismatches++;
      return fail_run(c, "pushed message of " + std::to_string(n) + " bytes (opcode " + std::to_string(opcode) + "), expected a binary one of " + std::to_string(R.o.size));
    }
    R.verified++;
    if (R.running) R.messages++, R.lastDeliveryUs = now_us();
    return;
  }
  if (R.o.mode != Mode::Echo) return fail_run(c, "unexpected message from the server during an upgrade");
  bool ok = opcode == 0x2 && n == c->payload.size() && memcmp(p, c->payload.data(), n) == 0;
  if (!ok) {
    R.mismatches++;
    return fail_run(c, "echo differs from the message sent (" + std::to_string(n) + " bytes, opcode " + std::to_string(opcode) + ")");
  }
  R.verified++;
  if (!R.running) return;
  R.messages++;
  R.hist.add(now_us() - c->startedUs);
  if (R.o.count > 0 && R.messages >= R.o.count) return;  // the loop ends the run
  send_echo(c);
}

/** Strict frame parsing (RFC 6455 §5.2, §5.4, §5.5): returns false after fail_run/lose. */
bool parse_frames(Conn* c) {
  auto& in = c->in;
  size_t at = 0;
  // Each pass consumes one whole frame or stops: bounded by in.size().
  while (in.size() - at >= 2) {
    const uint8_t* p = in.data() + at;
    size_t avail = in.size() - at;
    uint8_t b0 = p[0], b1 = p[1];
    bool fin = b0 & 0x80;
    uint8_t opcode = b0 & 0x0f;
    if (b0 & 0x70) { fail_run(c, "protocol error: RSV bits set without an extension"); return false; }
    if (b1 & 0x80) { fail_run(c, "protocol error: masked frame from the server"); return false; }
    uint64_t len = b1 & 0x7f;
    size_t hdr = 2;
    if (len == 126) {
      if (avail < 4) break;
      len = uint64_t(p[2]) << 8 | p[3], hdr = 4;
      if (len < 126) { fail_run(c, "protocol error: length not in its shortest form"); return false; }
    } else if (len == 127) {
      if (avail < 10) break;
      len = 0;
      for (int i = 0; i < 8; i++) len = len << 8 | p[2 + i];
      hdr = 10;
      if (len >> 63) { fail_run(c, "protocol error: 64-bit length with its top bit set"); return false; }
      if (len < 65536) { fail_run(c, "protocol error: length not in its shortest form"); return false; }
    }
    bool control = opcode & 0x8;
    if (control && (!fin || len > 125)) { fail_run(c, "protocol error: fragmented or oversized control frame"); return false; }
    if (!control && opcode != 0x0 && opcode != 0x1 && opcode != 0x2) { fail_run(c, "protocol error: reserved opcode " + std::to_string(opcode)); return false; }
    if (control && opcode != 0x8 && opcode != 0x9 && opcode != 0xA) { fail_run(c, "protocol error: reserved opcode " + std::to_string(opcode)); return false; }
    if (len > kMaxMessage || (!control && c->msg.size() + len > kMaxMessage)) { fail_run(c, "message larger than " + std::to_string(kMaxMessage) + " bytes"); return false; }
    if (avail < hdr + len) break;
    const uint8_t* pl = p + hdr;
    at += hdr + size_t(len);
    if (opcode == 0x0) {
      if (!c->inMessage) { fail_run(c, "protocol error: continuation frame with no message started"); return false; }
      c->msg.insert(c->msg.end(), pl, pl + len);
      if (fin) {
        c->inMessage = false;
        on_message(c, c->msgOpcode, c->msg.data(), c->msg.size());
        c->msg.clear();
      }
    } else if (opcode == 0x1 || opcode == 0x2) {
      if (c->inMessage) { fail_run(c, "protocol error: new message inside a fragmented one"); return false; }
      if (fin) on_message(c, opcode, pl, size_t(len));
      else c->inMessage = true, c->msgOpcode = opcode, c->msg.assign(pl, pl + len);
    } else if (opcode == 0x9) {
      put_frame(c, 0xA, pl, size_t(len));  // RFC 6455 §5.5.2: a Pong with the Ping's payload
    } else if (opcode == 0x8) {
      if (len == 1) { fail_run(c, "protocol error: Close frame with a 1-byte body"); return false; }
      c->closeReceived = true;
      uint16_t code = len >= 2 ? uint16_t(pl[0] << 8 | pl[1]) : 1005;
      in.clear();
      if (c->closeSent) {
        R.closedClean++;
        destroy(c);
        return false;
      }
      send_close(c, code == 1005 ? 1000 : code);
      flush(c);
      lose(c, "server closed the WebSocket (code " + std::to_string(code) + ")");
      return false;
    }
    if (!R.fatal.empty()) return false;
  }
  if (at > 0) in.erase(in.begin(), in.begin() + long(at));
  return true;
}

bool header_is(const std::string& head, const char* name, std::string& value) {
  // Field names are case-insensitive (RFC 9110 §5.1); values trimmed of OWS.
  size_t pos = 0;
  size_t nlen = strlen(name);
  while ((pos = head.find("\r\n", pos)) != std::string::npos) {
    pos += 2;
    if (head.size() - pos > nlen && strncasecmp(head.c_str() + pos, name, nlen) == 0 && head[pos + nlen] == ':') {
      size_t v = pos + nlen + 1, e = head.find("\r\n", v);
      if (e == std::string::npos) e = head.size();
      while (v < e && (head[v] == ' ' || head[v] == '\t')) v++;
      while (e > v && (head[e - 1] == ' ' || head[e - 1] == '\t')) e--;
      value = head.substr(v, e - v);
      return true;
    }
  }
  return false;
}

/** The 101 head: status, Upgrade, Sec-WebSocket-Accept, no extension. Returns false after lose(). */
bool on_head(Conn* c) {
  std::string text(c->in.begin(), c->in.end());
  size_t end = text.find("\r\n\r\n");
  if (end == std::string::npos) {
    if (text.size() > kMaxHead) { lose(c, "handshake response head too large"); return false; }
    return true;
  }
  std::string head = text.substr(0, end);
  std::string status = head.substr(0, head.find("\r\n"));
  if (status.compare(0, 13, "HTTP/1.1 101 ") != 0 && status != "HTTP/1.1 101") { lose(c, "upgrade refused: " + status.substr(0, 80)); return false; }
  std::string v;
  if (!header_is(head, "upgrade", v) || strcasecmp(v.c_str(), "websocket") != 0) { lose(c, "101 without Upgrade: websocket"); return false; }
  if (!header_is(head, "sec-websocket-accept", v) || v != c->accept) { lose(c, "bad Sec-WebSocket-Accept"); return false; }
  if (header_is(head, "sec-websocket-extensions", v)) { lose(c, "101 with an extension that was not offered"); return false; }
  c->in.erase(c->in.begin(), c->in.begin() + long(end + 4));
  c->state = State::Open;
  c->deadlineUs = 0;
  R.opened++;
  R.connecting--;
  if (R.o.mode == Mode::Upgrade) {
    if (R.running) R.messages++, R.verified++, R.hist.add(now_us() - c->startedUs);
    // The handshake counted; the close handshake runs beside the slot's next connection.
    send_close(c, 1000);
    c->state = State::Closing;
    c->deadlineUs = now_us() + 2000000;
    R.conns[size_t(c->slot)] = nullptr;
    R.closing.push_back(c);
  }
  return parse_frames(c);
}

/** Progress a connection as far as it goes without blocking. */
void drive(Conn* c) {
  if (c->state == State::Connecting) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err == EINPROGRESS || err == EALREADY) return;
    if (err != 0) return lose(c, strerror(err));
    // Still connecting: no error and not yet writable shows as ENOTCONN on getpeername.
    sockaddr_in peer{};
    socklen_t pl = sizeof peer;
    if (getpeername(c->fd, reinterpret_cast<sockaddr*>(&peer), &pl) != 0) return;
    c->state = R.o.tls ? State::TlsHandshake : State::Head;
  }
#ifdef WSLOAD_TLS
  if (c->state == State::TlsHandshake) {
    int r = SSL_connect(c->ssl);
    if (r != 1) {
      int e = SSL_get_error(c->ssl, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
      char b[256];
      ERR_error_string_n(ERR_get_error(), b, sizeof b);
      ERR_clear_error();
      return lose(c, std::string("TLS handshake: ") + b);
    }
    c->state = State::Head;
  }
#endif
  if (!flush(c)) return lose(c, "write failed");
  uint8_t buf[65536];
  // Reads until the socket would block (edge-triggered epoll), bounded by what the kernel holds.
  while (c->state == State::Head || c->state == State::Open || c->state == State::Closing) {
    std::string why;
    ssize_t r = io_read(c, buf, sizeof buf, why);
    if (r == -1) break;
    if (r == -2) return lose(c, why);
    if (r == 0) {
      if (c->state == State::Closing && c->closeSent) { destroy(c); return; }
      return lose(c, c->state == State::Head ? "closed before the 101" : "server closed the connection without a Close frame");
    }
    c->in.insert(c->in.end(), buf, buf + r);
    if (c->state == State::Head) {
      if (!on_head(c)) return;
    } else if (!parse_frames(c)) {
      return;
    }
  }
  if (c->state != State::Dead && !flush(c)) lose(c, "write failed");
}

void lose(Conn* c, const std::string& why) {
  if (c->state == State::Dead) return;
  bool opening = c->state == State::Connecting || c->state == State::TlsHandshake || c->state == State::Head;
  if (opening) R.connecting--;
  bool closing = c->state == State::Closing;
  destroy(c);
  if (closing) return;  // an upgrade loop's finished connection: already counted
  if (opening) {
    R.connectFailed++;
    note_reason(why);
    if (R.o.mode == Mode::Upgrade) {
      // poll_once refills the slot (never from here: a connect that fails at once would recurse).
      R.conns[size_t(c->slot)] = nullptr;
      R.closing.push_back(c);  // freed there, after the event batch that may still name it
      if (R.running) R.lost++;
    }
    return;
  }
  note_reason(why);
  if (R.running) R.lost++;
}

Conn* open_conn(int slot) {
  Conn* c = new Conn();
  c->slot = slot;
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0) {
    note_reason(strerror(errno));
    c->state = State::Dead;
    R.connectFailed++;
    if (R.running) R.lost++;
    return c;
  }
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->startedUs = now_us();
  c->deadlineUs = c->startedUs + uint64_t(R.o.connectTimeoutS * 1e6);
  R.connecting++;
  if (connect(c->fd, reinterpret_cast<sockaddr*>(&R.addr), sizeof R.addr) != 0 && errno != EINPROGRESS) {
    std::string why = strerror(errno);
    lose(c, why);
    return c;
  }
#ifdef WSLOAD_TLS
  if (R.o.tls) {
    c->ssl = SSL_new(R.ctx);
    SSL_set_fd(c->ssl, c->fd);
    const std::string& name = R.o.authority.empty() ? R.o.host : R.o.authority;
    in6_addr tmp;
    if (inet_pton(AF_INET, name.c_str(), &tmp) != 1 && inet_pton(AF_INET6, name.c_str(), &tmp) != 1) SSL_set_tlsext_host_name(c->ssl, name.c_str());
  }
#endif
  uint8_t key[16];
  for (int i = 0; i < 16; i += 4) { uint32_t v = rnd32(); memcpy(key + i, &v, 4); }
  std::string k = base64(key, 16);
  uint8_t dig[20];
  Sha1().digest(k + kGuid, dig);
  c->accept = base64(dig, 20);
  std::string host = R.o.authority.empty() ? R.o.host + ":" + std::to_string(R.o.port) : R.o.authority;
  std::string req = "GET " + R.o.path + " HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + k +
                    "\r\nSec-WebSocket-Version: 13\r\n\r\n";
  c->out.assign(req.begin(), req.end());
  if (R.o.mode == Mode::Echo) {
    c->payload.resize(size_t(R.o.size));
    for (int i = 0; i < R.o.size; i++) c->payload[size_t(i)] = uint8_t((slot * 31 + i * 7) & 0xff);
    if (R.o.size >= 4) c->payload[0] = uint8_t(slot >> 24), c->payload[1] = uint8_t(slot >> 16), c->payload[2] = uint8_t(slot >> 8), c->payload[3] = uint8_t(slot);
  }
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP;
  ev.data.ptr = c;
  epoll_ctl(R.ep, EPOLL_CTL_ADD, c->fd, &ev);
  return c;
}

void start_upgrade_slot(int slot) {
  if (R.o.count > 0 && R.messages >= R.o.count) return;
  Conn* c = open_conn(slot);
  if (c->state != State::Dead) R.conns[size_t(slot)] = c;
  else if (std::find(R.closing.begin(), R.closing.end(), c) == R.closing.end()) R.closing.push_back(c);
}

/** The publish connections: plain TCP, blocking connect at setup (loopback), then non-blocking in the epoll set. */
void open_publishers() {
  std::string body(size_t(R.o.size), '\0');
  for (int i = 0; i < R.o.size; i++) body[size_t(i)] = char((i * 13 + 5) & 0xff);
  R.pubRequest = "POST " + R.o.publishPath + " HTTP/1.1\r\nHost: " + R.o.host + ":" + std::to_string(R.o.publishPort) +
                 "\r\nContent-Type: application/octet-stream\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" +
                 (R.o.publishHeader.empty() ? "" : R.o.publishHeader + "\r\n") + "\r\n" + body;
  sockaddr_in a = R.addr;
  a.sin_port = htons(uint16_t(R.o.publishPort));
  for (int i = 0; i < R.o.inflight; i++) {
    Conn* c = new Conn();
    c->publisher = true;
    c->slot = -1 - i;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval tv{5, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (c->fd < 0 || connect(c->fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      fail_run(nullptr, std::string("publisher cannot connect to port ") + std::to_string(R.o.publishPort) + ": " + strerror(errno));
      if (c->fd >= 0) close(c->fd);
      delete c;
      return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    c->state = State::Open;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP;
    ev.data.ptr = c;
    epoll_ctl(R.ep, EPOLL_CTL_ADD, c->fd, &ev);
    R.pubs.push_back(c);
  }
}

/** Sends publishes while the credit allows: fewer than --inflight undelivered (or a 200 ms stall). */
void pump_publishers() {
  if (!R.running || R.pubs.empty()) return;
  uint64_t n = uint64_t(R.opened > 0 ? R.opened : 1);
  for (Conn* c : R.pubs) {
    if (c->busy || c->state != State::Open) continue;
    uint64_t delivered = R.messages / n;
    bool credit = R.published < delivered + uint64_t(R.o.inflight);
    if (!credit) {
      uint64_t now = now_us();
      if (now - std::max(R.lastDeliveryUs, R.lastPublishUs) < 200000) return;
      R.stalls++;
    }
    c->busy = true;
    R.published++;
    R.lastPublishUs = now_us();
    c->out.assign(R.pubRequest.begin(), R.pubRequest.end());
    c->outOff = 0;
    if (!flush(c)) return fail_run(c, "publish write failed");
  }
}

/** A publish connection's bytes: whole HTTP answers (2xx, Content-Length body), one per POST. */
void drive_publisher(Conn* c) {
  if (!flush(c)) return fail_run(c, "publish write failed");
  uint8_t buf[16384];
  while (true) {
    std::string why;
    ssize_t r = io_read(c, buf, sizeof buf, why);
    if (r == -1) break;
    if (r <= 0) {
      // After the window an idle keep-alive connection may be closed by the server: not a failure then.
      if (!R.running) { destroy(c); return; }
      return fail_run(c, "publish connection closed by the server" + (why.empty() ? "" : ": " + why));
    }
    c->in.insert(c->in.end(), buf, buf + r);
    while (true) {
      std::string text(c->in.begin(), c->in.end());
      size_t end = text.find("\r\n\r\n");
      if (end == std::string::npos) {
        if (text.size() > kMaxHead) return fail_run(c, "publish answer head too large");
        break;
      }
      std::string head = text.substr(0, end), v;
      if (head.compare(0, 10, "HTTP/1.1 2") != 0) return fail_run(c, "publish answered " + head.substr(0, head.find("\r\n")).substr(0, 80) + ": " + text.substr(end + 4, 120));
      size_t body = header_is(head, "content-length", v) ? size_t(strtoull(v.c_str(), nullptr, 10)) : 0;
      if (body > kMaxHead) return fail_run(c, "publish answer body too large");
      if (text.size() < end + 4 + body) break;
      c->in.erase(c->in.begin(), c->in.begin() + long(end + 4 + body));
      if (!c->busy) return fail_run(c, "publish answer with no request");
      c->busy = false;
      R.answered++;
    }
  }
  pump_publishers();
}

/** stdin lines for --sync ("go", "done"); false when stdin closed. */
void read_stdin() {
  char b[256];
  for (int i = 0; i < 16; i++) {
    ssize_t r = read(0, b, sizeof b);
    if (r == 0) { R.stdinEof = true; return; }
    if (r < 0) return;
    for (ssize_t j = 0; j < r; j++) {
      if (b[j] == '\n') { R.stdinWords.push_back(R.stdinLine); R.stdinLine.clear(); }
      else if (R.stdinLine.size() < 64 && b[j] != '\r') R.stdinLine += b[j];
    }
  }
}

/** One pass of the event loop (at most `waitMs`): I/O, then phase deadlines. */
void poll_once(int waitMs) {
  epoll_event evs[kMaxEvents];
  int n = epoll_wait(R.ep, evs, kMaxEvents, waitMs);
  for (int i = 0; i < n; i++) {
    if (evs[i].data.ptr == nullptr) { read_stdin(); continue; }
    Conn* c = static_cast<Conn*>(evs[i].data.ptr);
    if (c->publisher) { if (c->state != State::Dead) drive_publisher(c); }
    else if (c->state != State::Dead) drive(c);
  }
  pump_publishers();
  uint64_t now = now_us();
  // Phase deadlines are coarse (seconds): a sweep every 10 ms keeps a busy loop from walking every connection.
  static uint64_t nextSweep = 0;
  if (now >= nextSweep) {
    nextSweep = now + 10000;
    for (Conn* c : R.conns)
      if (c != nullptr && c->state != State::Dead && c->deadlineUs != 0 && now > c->deadlineUs) lose(c, c->state == State::Closing ? "no Close from the server" : "handshake timeout");
  }
  // Finished close handshakes of the upgrade loops: free them, bounded by the list.
  size_t keep = 0;
  for (Conn* c : R.closing) {
    if (c->state != State::Dead && now > c->deadlineUs) destroy(c);
    if (c->state == State::Dead) delete c;
    else R.closing[keep++] = c;
  }
  R.closing.resize(keep);
  // Upgrade loops: each empty slot starts its next connection.
  if (R.o.mode == Mode::Upgrade && R.running)
    for (size_t s = 0; s < R.conns.size(); s++) if (R.conns[s] == nullptr) start_upgrade_slot(int(s));
}

bool wait_word(const char* word, double timeoutS) {
  uint64_t deadline = now_us() + uint64_t(timeoutS * 1e6);
  while (true) {
    for (auto& w : R.stdinWords) if (w == word) return true;
    if (R.stdinEof) { fail_run(nullptr, std::string("stdin closed while waiting for \"") + word + "\""); return false; }
    if (now_us() > deadline) { fail_run(nullptr, std::string("no \"") + word + "\" on stdin in time"); return false; }
    if (g_stop) { fail_run(nullptr, "interrupted"); return false; }
    poll_once(50);
  }
}

[[noreturn]] void usage(const char* why) {
  fprintf(stderr, "ws-load: %s\nusage: ws-load --port P [--host H] [--path /ws] [--authority NAME] [--tls] [--connections N] "
                  "[--mode echo|upgrade|recv] [--size B] [--duration S] [--count K] [--connect-timeout S] [--sync]\n", why);
  exit(2);
}

double num(const char* flag, const char* v, double lo, double hi) {
  char* end = nullptr;
  double d = strtod(v, &end);
  if (end == v || *end != '\0' || !(d >= lo && d <= hi)) usage((std::string(flag) + " out of range: " + v).c_str());
  return d;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto val = [&]() -> const char* { if (i + 1 >= argc) usage((a + " needs a value").c_str()); return argv[++i]; };
    if (a == "--port") o.port = int(num("--port", val(), 1, 65535));
    else if (a == "--host") o.host = val();
    else if (a == "--path") o.path = val();
    else if (a == "--authority") o.authority = val();
    else if (a == "--connections") o.connections = int(num("--connections", val(), 1, kMaxConnections));
    else if (a == "--size") o.size = int(num("--size", val(), 1, 65535));
    else if (a == "--duration") o.durationS = num("--duration", val(), 0.001, 3600);
    else if (a == "--count") o.count = uint64_t(num("--count", val(), 1, 1e12));
    else if (a == "--connect-timeout") o.connectTimeoutS = num("--connect-timeout", val(), 0.001, 3600);
    else if (a == "--publish-port") o.publishPort = int(num("--publish-port", val(), 1, 65535));
    else if (a == "--publish-path") o.publishPath = val();
    else if (a == "--publish-header") o.publishHeader = val();
    else if (a == "--inflight") o.inflight = int(num("--inflight", val(), 1, 256));
    else if (a == "--tls") o.tls = true;
    else if (a == "--sync") o.sync = true;
    else if (a == "--mode") {
      std::string m = val();
      if (m == "echo") o.mode = Mode::Echo;
      else if (m == "upgrade") o.mode = Mode::Upgrade;
      else if (m == "recv") o.mode = Mode::Recv;
      else usage(("unknown --mode " + m).c_str());
    } else if (a == "--version") {
#ifdef WSLOAD_TLS
      puts("{\"tls\":true}");
#else
      puts("{\"tls\":false}");
#endif
      exit(0);
    } else usage(("unknown option " + a).c_str());
  }
  if (o.port == 0) usage("--port is required");
  if (o.path.empty() || o.path[0] != '/' || o.path.find_first_of(" \r\n") != std::string::npos) usage("--path must start with / and hold no space or line break");
  if (o.authority.find_first_of(" \r\n") != std::string::npos) usage("--authority holds a space or line break");
  if (o.publishPath.empty() || o.publishPath[0] != '/' || o.publishPath.find_first_of(" \r\n") != std::string::npos) usage("--publish-path must start with / and hold no space or line break");
  if (o.publishHeader.find_first_of("\r\n") != std::string::npos || (!o.publishHeader.empty() && o.publishHeader.find(':') == std::string::npos)) usage("--publish-header is one \"Name: value\" line");
  if (o.publishPort != 0 && o.mode != Mode::Recv) usage("--publish-port goes with --mode recv");
#ifndef WSLOAD_TLS
  if (o.tls) usage("this build has no TLS (OpenSSL was not linkable when it was compiled)");
#endif
  return o;
}

uint64_t tv_us(const timeval& t) { return uint64_t(t.tv_sec) * 1000000ull + uint64_t(t.tv_usec); }

}  // namespace

int main(int argc, char** argv) {
  R.o = parse(argc, argv);
  const Options& o = R.o;
  signal(SIGPIPE, SIG_IGN);
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);
  if (getrandom(&g_rng, sizeof g_rng, 0) != sizeof g_rng || g_rng == 0) g_rng = now_us() | 1;
  R.addr.sin_family = AF_INET;
  R.addr.sin_port = htons(uint16_t(o.port));
  if (inet_pton(AF_INET, o.host.c_str(), &R.addr.sin_addr) != 1) usage("--host must be an IPv4 address");
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) rl.rlim_cur = rl.rlim_max, setrlimit(RLIMIT_NOFILE, &rl);
#ifdef WSLOAD_TLS
  if (o.tls) {
    R.ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(R.ctx, SSL_VERIFY_NONE, nullptr);  // the bench's certificate is a fresh self-signed one
    SSL_CTX_set_session_cache_mode(R.ctx, SSL_SESS_CACHE_OFF);  // every connection a full handshake, as wrk's
    SSL_CTX_set_mode(R.ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  }
#endif
  R.ep = epoll_create1(EPOLL_CLOEXEC);
  if (o.sync) {
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = nullptr;
    epoll_ctl(R.ep, EPOLL_CTL_ADD, 0, &ev);
  }
  rusage ru0{};
  getrusage(RUSAGE_SELF, &ru0);
  R.conns.assign(size_t(o.connections), nullptr);
  uint64_t elapsedUs = 0;
  if (o.mode != Mode::Upgrade) {
    // Open every connection, kMaxConnecting at a time; each phase has its deadline (poll_once enforces it).
    int next = 0;
    uint64_t bound = now_us() + uint64_t((o.connectTimeoutS * 2 + 5) * 1e6);
    while (!g_stop && now_us() < bound && R.fatal.empty()) {
      while (next < o.connections && R.connecting < kMaxConnecting) {
        Conn* c = open_conn(next);
        R.conns[size_t(next++)] = c;
      }
      int pending = 0;
      for (Conn* c : R.conns) if (c != nullptr && (c->state == State::Connecting || c->state == State::TlsHandshake || c->state == State::Head)) pending++;
      if (next == o.connections && pending == 0) break;
      poll_once(20);
    }
    for (Conn* c : R.conns) if (c != nullptr && c->state != State::Open && c->state != State::Dead) lose(c, "handshake timeout");
  }
  if (o.publishPort != 0 && R.fatal.empty()) open_publishers();
  int connected = o.mode == Mode::Upgrade ? o.connections : R.opened;
  emit("{\"event\":\"ready\",\"connected\":%d}", connected);
  bool go = connected > 0 && R.fatal.empty() && (!o.sync || wait_word("go", 30));
  if (go) {
    emit("{\"event\":\"start\"}");
    R.running = true;
    uint64_t t0 = now_us(), end = t0 + uint64_t(o.durationS * 1e6);
    if (o.mode == Mode::Upgrade) for (int s = 0; s < o.connections; s++) start_upgrade_slot(s);
    else if (o.mode == Mode::Echo) for (Conn* c : R.conns) if (c->state == State::Open) { send_echo(c); drive(c); }
    R.lastDeliveryUs = now_us();
    pump_publishers();
    while (!g_stop && R.fatal.empty() && now_us() < end && !(o.count > 0 && R.messages >= o.count)) {
      uint64_t left = (end - now_us()) / 1000;
      poll_once(int(std::min<uint64_t>(left + 1, 50)));
      if (o.mode != Mode::Upgrade) {
        bool any = false;
        for (Conn* c : R.conns) if (c->state == State::Open) { any = true; break; }
        if (!any) break;
      }
    }
    R.running = false;
    elapsedUs = now_us() - t0;
    emit("{\"event\":\"stop\"}");
    if (o.sync && R.fatal.empty()) wait_word("done", 10);
  }
  // Close handshake on every open connection (Close 1000, wait for the server's Close), bounded by 2 s.
  std::vector<Conn*> all = R.conns;
  all.insert(all.end(), R.closing.begin(), R.closing.end());
  R.closing.clear();
  uint64_t closeBy = now_us() + 2000000;
  for (Conn* c : all) if (c != nullptr && c->state == State::Open) { send_close(c, 1000); c->state = State::Closing; c->deadlineUs = closeBy; drive(c); }
  for (Conn* c : all) if (c != nullptr && c->state != State::Closing) destroy(c);
  R.conns = all;
  while (now_us() < closeBy) {
    bool open = false;
    for (Conn* c : R.conns) if (c != nullptr && c->state != State::Dead) { open = true; break; }
    if (!open) break;
    poll_once(20);
  }
  for (Conn* c : R.conns) if (c != nullptr) { destroy(c); delete c; }
  for (Conn* c : R.pubs) { destroy(c); delete c; }
  rusage ru1{};
  getrusage(RUSAGE_SELF, &ru1);
  double rate = elapsedUs > 0 ? double(R.messages) * 1e6 / double(elapsedUs) : 0;
  std::string reasons;
  for (auto& r : R.reasons) reasons += (reasons.empty() ? "\"" : ",\"") + json_escape(r) + "\"";
  const Histogram& h = R.hist;
  emit("{\"event\":\"result\",\"native\":true,\"tls\":%s,\"mode\":\"%s\",\"connections\":%d,\"connected\":%d,\"connectErrors\":[%s],"
       "\"messages\":%llu,\"elapsedMs\":%llu,\"msgPerSec\":%.0f,\"meanRttUs\":%llu,\"verified\":%llu,\"mismatches\":%llu,\"lost\":%llu,"
       "\"protocolErrors\":%llu,\"closedClean\":%llu,\"latencyUs\":{\"p50\":%llu,\"p90\":%llu,\"p99\":%llu,\"max\":%llu,\"mean\":%llu},"
       "\"published\":%llu,\"publishAnswered\":%llu,\"publishStalls\":%llu,\"cpuUserUs\":%llu,\"cpuSystemUs\":%llu%s%s%s}",
       o.tls ? "true" : "false", o.mode == Mode::Echo ? "echo" : o.mode == Mode::Upgrade ? "upgrade" : "recv", o.connections, connected, reasons.c_str(),
       (unsigned long long)R.messages, (unsigned long long)(elapsedUs / 1000), rate, (unsigned long long)(h.n > 0 ? h.sum / h.n : 0), (unsigned long long)R.verified,
       (unsigned long long)R.mismatches, (unsigned long long)R.lost, (unsigned long long)(R.fatal.empty() ? 0 : 1), (unsigned long long)R.closedClean,
       (unsigned long long)h.pct(0.5), (unsigned long long)h.pct(0.9), (unsigned long long)h.pct(0.99), (unsigned long long)h.max,
       (unsigned long long)(h.n > 0 ? h.sum / h.n : 0), (unsigned long long)R.published, (unsigned long long)R.answered, (unsigned long long)R.stalls,
       (unsigned long long)(tv_us(ru1.ru_utime) - tv_us(ru0.ru_utime)),
       (unsigned long long)(tv_us(ru1.ru_stime) - tv_us(ru0.ru_stime)), R.fatal.empty() ? "" : ",\"error\":\"", json_escape(R.fatal).c_str(), R.fatal.empty() ? "" : "\"");
  return R.fatal.empty() ? 0 : 3;
}
