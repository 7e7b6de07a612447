// L4 listeners served wholly by the addon: on its own thread (one epoll set) it accepts in batches, counts each
// connection against limits.connections_per_ip in the worker's client table (client-table.h), picks a target
// (smooth weighted round robin, least_conn, random_two or hash on the client's address, as src/upstream/balancer.ts; a
// hash key's open connections reported and its pins honoured, as src/upstream/sticky.ts wants), connects without blocking within the
// connect timeout (each target tried once, as the JS path's 'untried' rule), writes the PROXY header an upstream
// wants, and hands both fds to the relay. No JS object exists per connection: JavaScript compiles the config
// (targets, bits, timeouts), pushes target state changes, and receives batches of closed-connection records (at
// most one per kBatchMs), from which it writes the access log and metrics (src/tunnel/l4-native.ts).
#include "l4.h"

#include "client-hello.h"
#include "client-key.h"
#include "client-table.h"
#include "hash-pick.h"
#include "ip-text.h"
#include "loop-thread.h"
#include "napi-args.h"
#include "passthrough-names.h"
#include "proxy-header.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

namespace portico::l4 {
namespace {

constexpr uint64_t kListenerTag = 1ull << 63;  // epoll data of a listener: tag | listener id; else a connection id
constexpr int kAcceptBatch = 64;               // accepts per listener per wake-up (level triggering brings the rest)
constexpr int kMaxEvents = 256;
constexpr uint64_t kAcceptPauseMs = 100;  // after EMFILE/ENFILE/ENOBUFS/ENOMEM: a queue we cannot drain would spin
constexpr int kSweepMs = 25;              // connect deadlines and paused listeners are checked this often
constexpr int kDeferAcceptS = 1;          // TCP_DEFER_ACCEPT of a deferring listener, as native accept's (io.cc)
constexpr int kKeepIdleS = 60;            // TCP keep-alive probe as the JS tunnels set it (relay.ts)
constexpr uint64_t kLingerMs = 2000;      // a refused TLS client's time to read its alert (l4.ts REFUSED_LINGER_MS)
// Batches to JS are at least this far apart: under load a batch carries many connections, so the JS thread's
// wake-up (eventfd write and read, a futex or two, the callback) is paid per batch, not per connection. A lone
// connection's record still goes at once.
constexpr uint64_t kBatchMs = 5;
constexpr uint8_t kAlertUnrecognizedName = 112;
constexpr uint8_t kAlertMissingExtension = 109;

uint64_t Clock(clockid_t id) {
  timespec ts{};
  clock_gettime(id, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}
uint64_t MonoMs() { return Clock(CLOCK_MONOTONIC); }
uint64_t WallMs() { return Clock(CLOCK_REALTIME); }

struct Target {
  sockaddr_storage addr{};
  socklen_t len = 0;
  double weight = 1;
  bool up = true;
  double current = 0;   // smooth weighted round robin state
  uint32_t active = 0;  // connections of this worker (connecting or relayed), for least_conn
  uint32_t remote = 0;  // pushed by JS: the other workers' load, and this worker's connections other compiles hold
  double ramp_until = 0;  // slow start: wall-clock ms (Date.now's base) until which the weight ramps (pushed by JS)
};

// A listener's proxy_protocol: the PROXY header read first, from trusted senders only (accept-paths.ts #acceptPath).
struct ProxyIn {
  std::vector<pp::Cidr> trusted;  // proxy_protocol.trusted
  uint32_t timeout_ms = 0;        // a tcp listener: the whole header within this (timeouts.head); passthrough: peek_ms
};

// limits.connections_per_ip of a listener's compile: the worker's table (client-table.h, JavaScript's connections count
// there too), the max and limits.ipv6_prefix as they were when it was compiled (a reload's new values reach new
// connections only; a counted connection releases the key it took).
struct Limit {
  std::shared_ptr<clients::Table> table;
  uint32_t max = 0;
  uint32_t prefix = 64;
};
constexpr const char* kRefusedLimit = "connections_per_ip";

// upstreams.X.balance among those the addon serves (l4-native.ts)
enum class Balance : uint8_t { kRoundRobin, kLeastConn, kRandomTwo, kHash };

// One compile of one listener; conns keep theirs alive across a reload (shared_ptr), so their counts stay right.
struct Config {
  uint32_t id = 0;
  std::vector<Target> targets;
  Balance balance = Balance::kRoundRobin;
  uint32_t connect_ms = 0;
  uint32_t idle_ms = 0;
  uint32_t lifetime_ms = 0;  // tunnel.max_lifetime; 0: none
  uint32_t half_closed_ms = 0;  // tunnel.half_closed_timeout; 0: none
  int proxy = 0;  // PROXY header to the upstream: 0 none, 1 v1, 2 v2
  bool half_close = true;  // the listener's half_close (StartOptions::half_close)
  uint32_t slow_start_ms = 0;  // the upstream's slow_start window; 0: off
  double slow_start_floor = 0;  // the weight a ramp starts at, as a share of the target's (balancer.ts SLOW_START_FLOOR)
  std::vector<double> w;  // the weights of a pick: the targets' own, ramped at each pick during a slow start
  std::shared_ptr<const ProxyIn> proxy_in;  // a tcp listener's proxy_protocol; null: none
  std::shared_ptr<const Limit> limit;  // a tcp listener's connections_per_ip; null: off
  // kHash: the Maglev table JavaScript built (slot -> target index), and the pins JavaScript pushes (sticky tunnels:
  // a key whose open connections sit on another target than its slot, -> that target's index)
  std::vector<uint32_t> table;
  std::unordered_map<std::string, int32_t> pins;
};

// TLS passthrough by SNI: the names as tunnel/l4.ts PassthroughTable matches them (passthrough-names.h), each entry's
// compiled upstream.
struct SniTable {
  SniTable(const std::vector<std::string>& names, std::vector<std::shared_ptr<Config>> configs) : names(names), configs(std::move(configs)) {}

  uint32_t id = 0;
  passthrough::Names names;
  std::vector<std::shared_ptr<Config>> configs;  // by entry, as `names` answers
  uint32_t peek_ms = 0;  // the whole ClientHello (and the PROXY header before it) must come within this
  std::shared_ptr<const ProxyIn> proxy_in;  // the listener's proxy_protocol; null: none
  std::shared_ptr<const Limit> limit;  // the listener's connections_per_ip; null: off

  std::shared_ptr<Config> Match(const std::string& sni) const {
    int32_t i = names.Match(sni);
    return i < 0 ? nullptr : configs[static_cast<size_t>(i)];
  }
};

struct Listener {
  int fd = -1;
  std::shared_ptr<Config> cfg;    // a tcp listener
  std::shared_ptr<SniTable> sni;  // a passthrough-only TLS listener
  uint64_t paused_until = 0;  // monotonic; 0 = accepting
  bool defer = false;  // TCP_DEFER_ACCEPT set by l4Defer: an accepted client's first bytes are already there
};

struct Failure {
  int32_t target;
  const char* code;
  int err;  // errno behind it (ETIMEDOUT for the connect timeout)
};

// A connection's phase on the L4 thread (after these the relay owns it): the PROXY header, the ClientHello, the
// connect, or a refused client's linger.
enum class Phase : uint8_t { kProxy, kPeek, kConnect, kLinger };

struct Conn {
  uint64_t id = 0;
  Phase phase = Phase::kConnect;
  std::shared_ptr<SniTable> table;  // passthrough: the listener's table (for the record)
  bool has_sni = false;
  std::string sni;
  std::string head;  // passthrough: the bytes read from the client while routing (the ClientHello), sent on first
  bool watched = false;  // passthrough: cfd is in the L4 set (a deferring listener's client is added only when it must wait)
  int cfd = -1;
  int ufd = -1;
  std::shared_ptr<Config> cfg;
  int32_t target = -1;
  std::vector<uint8_t> tried;
  size_t tried_count = 0;
  uint64_t deadline = 0;  // monotonic; 0 = no connect timeout
  uint64_t started = 0;   // wall clock
  sockaddr_storage peer{};
  std::vector<Failure> failures;
  bool proxied = false;  // a PROXY header was read (its bytes count as the preface's, as in preface.ts)
  // The client and the address it reached as a PROXY header named them (PROXY command, TCP over IPv4 or IPv6): the
  // access line's client and the PROXY header to targets; else the socket's own ends (LOCAL, UNKNOWN, unix).
  bool has_client = false;
  pp::Family client_family = pp::Family::kUnknown;
  uint16_t client_src[8] = {};
  uint16_t client_dst[8] = {};
  uint16_t client_sport = 0;
  uint16_t client_dport = 0;
  // limits.connections_per_ip: the client's key (once computed), and the table it is counted in while routed
  std::string key;
  std::shared_ptr<clients::Table> counted;
  // kHash: the client's address as $remote_addr (hash-pick.h), its hash; empty: no key (round robin)
  std::string hash_key;
  uint32_t hash = 0;

  Conn() = default;
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;
  // every end of a connection (a record, a refusal, a failure, a shutdown) deletes it: its count goes with it
  ~Conn() {
    if (counted) counted->Release(key);
  }
};

struct Record {
  uint64_t id;
  uint32_t table;  // passthrough: the SNI table's id, else 0
  bool has_sni;
  std::string sni;
  const char* refused;  // closed before routing: the RefusedReason, else nullptr
  std::string detail;   // with it: what the ClientHello or PROXY header reader said; empty: nothing
  std::string key;      // refused by connections_per_ip: the client's key; else empty
  uint32_t cfg;
  int32_t target;
  std::string addr;
  uint16_t port;
  uint64_t up;
  uint64_t down;
  uint64_t duration_ms;
  const char* closed_by;
  const char* err_code;  // nullptr: closed without error
  std::vector<Failure> failures;
};

// A connection of a hash compile relayed to its target: JavaScript counts its key open there (sticky.ts OpenKeys)
// until its record comes.
struct Held {
  uint64_t id;
  uint32_t cfg;
  int32_t target;
  std::string key;
};

struct State {
  std::mutex mu;  // everything below; the L4 thread holds it while it handles a batch of events
  std::unordered_map<uint32_t, std::shared_ptr<Config>> configs;
  std::unordered_map<uint32_t, std::shared_ptr<Config>> forgotten;  // no listener takes them; connections may
  std::unordered_map<uint32_t, std::shared_ptr<SniTable>> tables;
  std::vector<uint8_t> peek;  // the L4 thread's ClientHello buffer (a hello in pieces is kept in Conn::head between reads)
  std::vector<uint8_t> proxy;  // its PROXY header buffer (likewise)
  std::unordered_map<uint32_t, Listener> listeners;
  std::unordered_map<uint64_t, Conn*> connecting;  // by connection id
  std::vector<Record> records;
  std::vector<Held> held;  // hash keys relayed since the last batch (their records come later: never before)
  uint64_t opened = 0;  // accepted since the last batch
  uint32_t next_config = 1;
  uint32_t next_listener = 1;
  uint64_t next_conn = 1;
  std::mt19937_64 rng{std::random_device{}()};  // random_two's draws
  bool started = false;
  bool stopping = false;
  LoopThread loop;  // its epoll set, wake-up fd and thread
  RelayEngine* engine = nullptr;
  Napi::ThreadSafeFunction tsfn;
  bool has_tsfn = false;  // also under ends_mu to change

  // What the relay thread touches when an L4 relay ends, under a lock of its own so that it never waits for the
  // L4 thread's turn (held under mu for a whole batch of events). Taken after mu, never before it.
  std::mutex ends_mu;
  std::unordered_map<uint64_t, Conn*> relayed;       // by relay id
  std::vector<std::pair<Conn*, RelayEnd>> ended;     // relays ended, not yet records (DrainEnded, under mu)
  bool scheduled = false;   // a batch call is queued on the JS thread
  uint64_t last_batch = 0;  // monotonic ms when the last batch call was queued
  uint64_t batch_due = 0;   // monotonic ms when the L4 thread queues the waiting batch; 0: none waits
  bool asleep = false;      // the L4 thread is (about to be) in epoll_wait without a timeout
};

State& g = *new State();  // never destroyed: a joinable std::thread destroyed at exit() would std::terminate
std::atomic<bool> any{false};  // an L4 listener was ever served: relay ends are worth a look-up

// ---- PROXY header out (as buildProxyV1/buildProxyV2 of src/wire/proxy-protocol.ts) ----

// The header for ends `s` -> `d` (8 words each, IPv4 as IPv4-mapped), or UNKNOWN / UNSPEC when not `known`.
std::string ProxyHeaderOf(int version, bool known, const uint16_t s[8], const uint16_t d[8], uint16_t sport, uint16_t dport) {
  bool v6 = known && !(pp::IsV4Mapped(s) && pp::IsV4Mapped(d));
  if (version == 1) {
    if (!known) return "PROXY UNKNOWN\r\n";
    std::string out = v6 ? "PROXY TCP6 " + pp::HexGroups(s) + " " + pp::HexGroups(d) : "PROXY TCP4 " + pp::FormatIPv4(s[6], s[7]) + " " + pp::FormatIPv4(d[6], d[7]);
    return out + " " + std::to_string(sport) + " " + std::to_string(dport) + "\r\n";
  }
  static const uint8_t kSig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
  std::string out(reinterpret_cast<const char*>(kSig), 12);
  uint16_t body = !known ? 0 : v6 ? 36 : 12;
  out += static_cast<char>(0x21);
  out += static_cast<char>(!known ? 0x00 : v6 ? 0x21 : 0x11);
  out += static_cast<char>(body >> 8);
  out += static_cast<char>(body & 0xff);
  auto put16 = [&out](uint16_t v) {
    out += static_cast<char>(v >> 8);
    out += static_cast<char>(v & 0xff);
  };
  if (known) {
    if (v6) {
      for (int i = 0; i < 8; i++) put16(s[i]);
      for (int i = 0; i < 8; i++) put16(d[i]);
    } else {
      put16(s[6]);
      put16(s[7]);
      put16(d[6]);
      put16(d[7]);
    }
    put16(sport);
    put16(dport);
  }
  return out;
}

// The header a target wants for client `c`: the ends its own PROXY header named (accept-paths.ts proxiedSource and
// proxiedDestination), else its socket's peer and local address.
std::string ProxyHeader(int version, const Conn& c) {
  if (c.has_client) return ProxyHeaderOf(version, true, c.client_src, c.client_dst, c.client_sport, c.client_dport);
  sockaddr_storage local{};
  socklen_t len = sizeof local;
  uint16_t s[8], d[8], sport = 0, dport = 0;
  bool known = getsockname(c.cfd, reinterpret_cast<sockaddr*>(&local), &len) == 0 && AddressWords(c.peer, s, &sport) && AddressWords(local, d, &dport);
  return ProxyHeaderOf(version, known, s, d, sport, dport);
}

// ---- balancing (src/upstream/balancer.ts: SmoothWeightedRoundRobin, LeastConn, RandomTwo) ----

bool Eligible(const Target& t, const Conn& c, size_t i) { return t.up && t.weight > 0 && !c.tried[i]; }

double Load(const Target& t) { return static_cast<double>(t.active) + t.remote; }

// With a slow start, each target's weight at this pick into cfg.w: linear from the floor's share of its weight to
// all of it over the window's last `slow_start_ms` before ramp_until (balancer.ts rampedWeight). Without one, cfg.w
// holds the weights as compiled.
void RampedWeights(Config& cfg) {
  if (cfg.slow_start_ms == 0) return;
  const double now = static_cast<double>(WallMs());
  for (size_t i = 0; i < cfg.targets.size(); i++) {
    const Target& t = cfg.targets[i];
    if (t.ramp_until <= now) {
      cfg.w[i] = t.weight;
      continue;
    }
    const double left = std::min(1.0, (t.ramp_until - now) / cfg.slow_start_ms);
    cfg.w[i] = t.weight * (1 - (1 - cfg.slow_start_floor) * left);
  }
}

int32_t PickRoundRobin(Config& cfg, const Conn& c) {
  RampedWeights(cfg);
  int32_t best = -1;
  double total = 0;
  for (size_t i = 0; i < cfg.targets.size(); i++) {
    Target& t = cfg.targets[i];
    if (!Eligible(t, c, i)) continue;
    t.current += cfg.w[i];
    total += cfg.w[i];
    if (best == -1 || t.current > cfg.targets[best].current) best = static_cast<int32_t>(i);
  }
  if (best >= 0) cfg.targets[best].current -= total;
  return best;
}

int32_t PickLeastConn(Config& cfg, const Conn& c) {
  RampedWeights(cfg);
  const std::vector<double>& w = cfg.w;
  int32_t best = -1;
  int ties = 0;
  for (size_t i = 0; i < cfg.targets.size(); i++) {
    const Target& t = cfg.targets[i];
    if (!Eligible(t, c, i)) continue;
    if (best == -1) {
      best = static_cast<int32_t>(i);
      ties = 1;
      continue;
    }
    double lhs = Load(t) * w[best];
    double rhs = Load(cfg.targets[best]) * w[i];
    if (lhs < rhs) {
      best = static_cast<int32_t>(i);
      ties = 1;
    } else if (lhs == rhs) {
      ties++;
    }
  }
  if (best == -1 || ties == 1) return best;
  const Target& b = cfg.targets[best];
  int32_t chosen = -1;
  double total = 0;
  for (size_t i = best; i < cfg.targets.size(); i++) {
    Target& t = cfg.targets[i];
    if (!Eligible(t, c, i) || Load(t) * w[best] != Load(b) * w[i]) continue;
    t.current += w[i];
    total += w[i];
    if (chosen == -1 || t.current > cfg.targets[chosen].current) chosen = static_cast<int32_t>(i);
  }
  cfg.targets[chosen].current -= total;
  return chosen;
}

// An eligible target other than `skip`, drawn in proportion to its weight in cfg.w; -1 when there is none.
int32_t DrawWeighted(Config& cfg, const Conn& c, int32_t skip) {
  double total = 0;
  for (size_t i = 0; i < cfg.targets.size(); i++)
    if (static_cast<int32_t>(i) != skip && Eligible(cfg.targets[i], c, i)) total += cfg.w[i];
  if (!(total > 0)) return -1;
  double r = std::uniform_real_distribution<double>(0, total)(g.rng);
  int32_t last = -1;
  for (size_t i = 0; i < cfg.targets.size(); i++) {
    if (static_cast<int32_t>(i) == skip || !Eligible(cfg.targets[i], c, i)) continue;
    last = static_cast<int32_t>(i);
    r -= cfg.w[i];
    if (r < 0) return last;
  }
  return last;
}

// Two distinct targets drawn by (ramped) weight; the one with less load per weight, the first drawn on a tie
// (balancer.ts RandomTwo: the power of two choices).
int32_t PickRandomTwo(Config& cfg, const Conn& c) {
  RampedWeights(cfg);
  const int32_t a = DrawWeighted(cfg, c, -1);
  if (a < 0) return -1;
  const int32_t b = DrawWeighted(cfg, c, a);
  if (b < 0) return a;
  return Load(cfg.targets[b]) * cfg.w[a] < Load(cfg.targets[a]) * cfg.w[b] ? b : a;
}

// balancer.ts Maglev.pickFor: a pinned key's target while it is eligible, else the key's slot and the walk past
// ineligible ones; without a key, smooth weighted round robin (the compile has no slow start: keys keep their target).
int32_t PickHash(Config& cfg, const Conn& c) {
  if (c.hash_key.empty()) return PickRoundRobin(cfg, c);
  if (!cfg.pins.empty()) {
    auto it = cfg.pins.find(c.hash_key);
    if (it != cfg.pins.end() && it->second >= 0 && static_cast<size_t>(it->second) < cfg.targets.size() &&
        Eligible(cfg.targets[it->second], c, static_cast<size_t>(it->second)))
      return it->second;
  }
  return hashpick::MaglevPick(cfg.table.data(), cfg.table.size(), cfg.targets.size(), c.hash,
                              [&](size_t i) { return Eligible(cfg.targets[i], c, i); });
}

// ---- records to JS ----

void Schedule();
void ScheduleLocked();
void Post(uint64_t now);
void Wake();

// The record's client: the one a PROXY header named for a routed connection (l4.ts logs req.source), the socket's
// peer for a refusal (accept-paths.ts #refused and #unknownName log socket.remoteAddress).
void PushRecord(Conn* c, const char* closed_by, const char* err_code, uint64_t up, uint64_t down, const char* refused = nullptr,
                std::string detail = std::string()) {
  uint16_t port = 0;
  std::string addr;
  // connections_per_ip refuses the client it counted: the header's, as accept-paths.ts #countRelay logs it
  const bool limit = refused != nullptr && std::strcmp(refused, kRefusedLimit) == 0;
  if (c->has_client && (refused == nullptr || limit)) {
    addr = pp::AddressText(c->client_family, c->client_src);
    port = c->client_sport;
  } else {
    char text[kAddressTextMax];
    addr.assign(text, AddressText(c->peer, text, &port));
  }
  uint64_t now = WallMs();
  g.records.push_back(Record{c->id, c->table ? c->table->id : 0, c->has_sni, c->sni, refused, std::move(detail), limit ? c->key : std::string(), c->cfg ? c->cfg->id : 0, c->target,
                             std::move(addr), port, up, down, now > c->started ? now - c->started : 0, closed_by, err_code,
                             std::move(c->failures)});
  Schedule();
}

void Release(Conn* c) {
  if (c->cfg && c->target >= 0 && c->cfg->targets[c->target].active > 0) c->cfg->targets[c->target].active--;
}

// Called with g.mu held: the relays ended since the last call become records (and their targets' counts drop).
void DrainEnded() {
  std::vector<std::pair<Conn*, RelayEnd>> ended;
  {
    std::lock_guard<std::mutex> lock(g.ends_mu);
    if (g.ended.empty()) return;
    ended.swap(g.ended);
  }
  for (auto& [c, end] : ended) {
    Release(c);
    const char* code = end.reason == Reason::kClientError ? "CLIENT_RESET" : end.reason == Reason::kUpstreamError ? "UPSTREAM_RESET" : nullptr;
    // the ClientHello was read by the L4 thread, not the relay: counted here
    PushRecord(c, ReasonName(end.reason), code, end.bytes_up + c->head.size(), end.bytes_down);
    delete c;
  }
}

// Before any relay: the client is closed and the connection reported with `code`.
void Fail(Conn* c, const char* closed_by, const char* code) {
  CloseFd(c->ufd);
  CloseFd(c->cfd);
  Release(c);
  PushRecord(c, closed_by, code, 0, 0);
  g.connecting.erase(c->id);
  delete c;
}

const char* ConnectCode(int err) {
  return err == ECONNREFUSED ? "UPSTREAM_CONNECT_REFUSED" : err == ETIMEDOUT ? "UPSTREAM_CONNECT_TIMEOUT" : "UPSTREAM_CONNECT_ERROR";
}

void TryConnect(Conn* c);

// The current target failed (`code`): counted for passive health by JS, then the next untried target; once every
// target was tried, the connection ends with this failure (as attempt.ts gives up with the last connect error).
void TargetFailed(Conn* c, const char* code, int err) {
  c->failures.push_back(Failure{c->target, code, err});
  if (c->ufd >= 0) epoll_ctl(g.loop.epfd, EPOLL_CTL_DEL, c->ufd, nullptr);
  CloseFd(c->ufd);
  Release(c);
  c->deadline = 0;
  c->target = -1;
  if (c->tried_count >= c->tried.size()) return Fail(c, "upstream_error", code);
  TryConnect(c);
}

// Connected: the PROXY header and the bytes read while routing (the ClientHello) go out in one send (a fresh
// socket's send buffer takes them whole, nearly always; what it does not take, the relay writes before anything
// else), then the relay owns both fds. The upstream fd stays in the L4 epoll set, disarmed (EPOLLONESHOT fired):
// no event comes from it, and its close by the relay removes it; one epoll_ctl less per connection. So does a
// passthrough client's fd (its EPOLLONESHOT fired for the ClientHello).
void Connected(Conn* c) {
  StartOptions options;
  if (c->cfg->proxy != 0 || !c->head.empty()) {
    std::string out = c->cfg->proxy != 0 ? ProxyHeader(c->cfg->proxy, *c) + c->head : c->head;
    ssize_t n = send(c->ufd, out.data(), out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return TargetFailed(c, "UPSTREAM_CONNECT_ERROR", errno);
    size_t sent = n < 0 ? 0 : static_cast<size_t>(n);
    if (sent < out.size()) options.upstream_first = out.substr(sent);
  }
  g.connecting.erase(c->id);
  std::string error;
  options.nonblocking = true;  // accept4 and socket made both with SOCK_NONBLOCK
  options.sole_owner = true;   // never dup()ed: their close() is their epoll removal
  options.upstream_keepalive_s = kKeepIdleS;  // once the relay lived a second: none for a short connection
  options.half_close = c->cfg->half_close;
  options.lifetime_ms = c->cfg->lifetime_ms;
  options.half_closed_ms = c->cfg->half_closed_ms;
  uint64_t rid;
  {
    // held across the start: a relay that ends at once is looked up by the relay thread only after the emplace
    std::lock_guard<std::mutex> lock(g.ends_mu);
    rid = g.engine->Start(c->cfd, c->ufd, c->cfg->idle_ms, nullptr, &error, options);
    if (rid != 0) g.relayed.emplace(rid, c);
  }
  c->cfd = -1;  // the engine's now, closed by it on failure too
  c->ufd = -1;
  if (rid == 0) {
    Release(c);
    PushRecord(c, "upstream_error", "INTERNAL", 0, 0);
    delete c;
    return;
  }
  if (!c->hash_key.empty()) {
    // relayed: its key counts open on this target until its record (never in an earlier batch than this)
    g.held.push_back(Held{c->id, c->cfg->id, c->target, c->hash_key});
    Schedule();
  }
}

void TryConnect(Conn* c) {
  Config& cfg = *c->cfg;
  for (;;) {
    int32_t t = cfg.balance == Balance::kHash        ? PickHash(cfg, *c)
                : cfg.balance == Balance::kLeastConn ? PickLeastConn(cfg, *c)
                : cfg.balance == Balance::kRandomTwo ? PickRandomTwo(cfg, *c)
                                                     : PickRoundRobin(cfg, *c);
    if (t < 0) return Fail(c, "upstream_error", "UPSTREAM_UNAVAILABLE");
    c->tried[t] = 1;
    c->tried_count++;
    c->target = t;
    Target& target = cfg.targets[t];
    target.active++;
    int fd = socket(target.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      // out of descriptors is Portico's shortage, not the target's: another target would fail the same way
      if (errno == EMFILE || errno == ENFILE) return Fail(c, "upstream_error", "FD_LIMIT");
      return TargetFailed(c, "UPSTREAM_CONNECT_ERROR", errno);
    }
    int one = 1;
    if (target.addr.ss_family != AF_UNIX) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // keep-alive: armed by the relay (Connected)
    c->ufd = fd;
    if (connect(fd, reinterpret_cast<const sockaddr*>(&target.addr), target.len) == 0) return Connected(c);
    // Over loopback the handshake has often completed inside that very call (the SYN-ACK is processed as the
    // socket is released): asking again says so (0, or EISCONN) and saves the epoll round trip (an epoll_ctl, a
    // wake-up and a getsockopt); EALREADY means it is still under way, anything else is the connect's error.
    if (errno == EINPROGRESS) {
      if (connect(fd, reinterpret_cast<const sockaddr*>(&target.addr), target.len) == 0 || errno == EISCONN) return Connected(c);
      if (errno == EALREADY) errno = EINPROGRESS;
    }
    if (errno == EINPROGRESS) {
      epoll_event ev{};
      ev.events = EPOLLOUT | EPOLLONESHOT;
      ev.data.u64 = c->id;
      if (epoll_ctl(g.loop.epfd, EPOLL_CTL_ADD, fd, &ev) != 0) return Fail(c, "upstream_error", "INTERNAL");
      c->deadline = cfg.connect_ms > 0 ? MonoMs() + cfg.connect_ms : 0;
      g.connecting.emplace(c->id, c);
      return;
    }
    int err = errno;
    return TargetFailed(c, ConnectCode(err), err);
  }
}

// Closed before routing (a preface failure, l4.ts's refusals): counted and logged by JS from the record.
void Refuse(Conn* c, const char* reason, std::string detail = std::string()) {
  if (c->watched) epoll_ctl(g.loop.epfd, EPOLL_CTL_DEL, c->cfd, nullptr);
  CloseFd(c->cfd);
  PushRecord(c, "refused", nullptr, 0, 0, reason, std::move(detail));
  g.connecting.erase(c->id);
  delete c;
}

// A client fd waiting in the L4 set (EPOLLONESHOT, level triggered) asks for its next event: what is already
// there to read is reported at once. The first wait of a client not yet in the set adds it. False (the caller
// closes it) when epoll refused.
bool Rearm(Conn* c) {
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT;
  ev.data.u64 = c->id;
  if (epoll_ctl(g.loop.epfd, c->watched ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->cfd, &ev) != 0) return false;
  c->watched = true;
  return true;
}

// limits.connections_per_ip's key of `c`: the client its PROXY header named, else its socket's peer (accept-paths.ts
// #countRelay).
std::string KeyOf(const Conn* c, uint32_t prefix) {
  return c->has_client ? ProxiedClientKey(c->client_family, c->client_src, prefix) : SocketClientKey(c->peer, prefix);
}

// Counts `c` against its client's connections until it is deleted; or refuses it (closed, reported, deleted: false)
// when its client has `limit.max` open already, as accept-paths.ts #countRelay once the connection is routed.
bool Count(Conn* c, const Limit& limit) {
  if (c->key.empty()) c->key = KeyOf(c, limit.prefix);
  if (limit.table->Acquire(c->key, limit.max)) {
    c->counted = limit.table;
    return true;
  }
  Refuse(c, kRefusedLimit);
  return false;
}

// Before anything is read (a listener without a PROXY header): a client at its limit is refused at accept (false:
// closed, reported, deleted), as accept-paths.ts #connectionLimit; the connection is counted once routed (Count).
bool BelowLimit(Conn* c, const Limit& limit) {
  c->key = KeyOf(c, limit.prefix);
  if (limit.table->Count(c->key) < limit.max) return true;
  Refuse(c, kRefusedLimit);
  return false;
}

// Reads and drops what a refused client still sends, until its FIN or the linger deadline (then closed): unread
// bytes would turn our close into a reset that destroys the alert in flight (l4.ts refuseClientHello).
void Linger(Conn* c) {
  char sink[4096];
  for (;;) {
    ssize_t n = recv(c->cfd, sink, sizeof sink, 0);
    if (n > 0) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && Rearm(c)) return;
    if (n < 0 && errno == EINTR) continue;
    if (c->watched) epoll_ctl(g.loop.epfd, EPOLL_CTL_DEL, c->cfd, nullptr);
    CloseFd(c->cfd);
    g.connecting.erase(c->id);
    delete c;
    return;
  }
}

// A ClientHello naming no passthrough (or none): one fatal alert, a FIN, then the linger. Reported now.
void RefuseName(Conn* c) {
  const char* reason = c->has_sni ? "sni_unknown" : "sni_missing";
  uint8_t alert[7] = {0x15, 0x03, 0x03, 0x00, 0x02, 0x02, c->has_sni ? kAlertUnrecognizedName : kAlertMissingExtension};
  send(c->cfd, alert, sizeof alert, MSG_NOSIGNAL);
  shutdown(c->cfd, SHUT_WR);
  PushRecord(c, "refused", nullptr, 0, 0, reason);
  c->phase = Phase::kLinger;
  c->deadline = MonoMs() + kLingerMs;
  Linger(c);
}

// A hash compile's key of `c`, routed to it: $remote_addr, the client a PROXY header named, else the socket's peer
// (l4.ts, hash-key.ts connectionKey), and its hash.
void KeyHash(Conn* c) {
  if (c->cfg->balance != Balance::kHash) return;
  c->hash_key = c->has_client ? ProxiedClientKey(c->client_family, c->client_src, kWholeAddress) : SocketClientKey(c->peer, kWholeAddress);
  c->hash = hashpick::HashString(c->hash_key);
}

// Routed on to a target (a tcp listener, or a passthrough name): the bytes read while routing go first.
void Route(Conn* c, std::shared_ptr<Config> route) {
  const Limit* limit = c->table ? c->table->limit.get() : route->limit.get();
  if (limit != nullptr && !Count(c, *limit)) return;
  g.connecting.erase(c->id);
  c->phase = Phase::kConnect;
  c->deadline = 0;
  c->cfg = std::move(route);
  c->tried.assign(c->cfg->targets.size(), 0);
  KeyHash(c);
  g.opened++;
  Schedule();
  TryConnect(c);
}

void Hello(Conn* c, size_t n, bool hung_up);

// The ClientHello, read (consumed: Connected sends it on before the relay starts) and parsed as
// src/wire/client-hello.ts does. A hello in pieces waits in c->head between reads; each read re-parses all of it.
// The fd is in the L4 set with EPOLLONESHOT: re-armed only while more is needed, and left disarmed once routed
// (no EPOLL_CTL_DEL; its close takes it out).
void Peek(Conn* c, bool hung_up) {
  if (g.peek.empty()) g.peek.resize(hello::kDefaultMax);
  const size_t have = c->head.size();
  memcpy(g.peek.data(), c->head.data(), have);
  ssize_t got = recv(c->cfd, g.peek.data() + have, g.peek.size() - have, 0);
  if (got < 0) {
    if ((errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) && Rearm(c)) return;
    return Refuse(c, "closed");
  }
  // nothing at all came (a PROXY header's bytes count: preface.ts says 'closed' only for an empty buffer)
  if (got == 0 && have == 0 && !c->proxied) return Refuse(c, "closed");
  if (got == 0) hung_up = true;
  Hello(c, have + static_cast<size_t>(got), hung_up);
}

// The first `n` bytes of g.peek are what came of the ClientHello so far: routed, refused, or kept for more.
void Hello(Conn* c, size_t n, bool hung_up) {
  hello::Result r = hello::Parse(g.peek.data(), n);
  switch (r.kind) {
    case hello::Kind::kMore:
      // the client's FIN came with what it sent (no more will come), or the bound is reached
      if (n >= g.peek.size()) return Refuse(c, "client_hello_invalid", "preface too large");
      if (hung_up) return Refuse(c, "client_hello_invalid", "connection ended inside the preface");
      c->head.assign(reinterpret_cast<const char*>(g.peek.data()), n);
      if (!Rearm(c)) return Refuse(c, "closed");
      return;
    case hello::Kind::kNotTls: return Refuse(c, "not_tls");
    case hello::Kind::kError: return Refuse(c, "client_hello_invalid", r.reason);
    case hello::Kind::kDone: break;
  }
  c->has_sni = r.has_sni;
  c->sni = std::move(r.sni);
  std::shared_ptr<Config> route = c->has_sni ? c->table->Match(c->sni) : nullptr;
  if (!route) return RefuseName(c);
  // all of it goes to the upstream, bytes past the hello's records too (a client may send on without waiting)
  c->head.assign(reinterpret_cast<const char*>(g.peek.data()), n);
  Route(c, std::move(route));
}

// The PROXY header (phase kProxy), read and parsed as preface.ts does with src/wire/proxy-protocol.ts: refusals with
// its reasons (proxy_missing, proxy_invalid with the reader's words, closed), then the ClientHello behind it (a
// passthrough listener, the same deadline) or the target (a tcp listener), the bytes after the header sent first.
// A header in pieces waits in c->head between reads, as a ClientHello does.
void ReadProxy(Conn* c, bool hung_up) {
  if (g.proxy.empty()) g.proxy.resize(pp::kDefaultV2Max);  // a v2 header's bound: the largest that can be 'more'
  const size_t have = c->head.size();
  memcpy(g.proxy.data(), c->head.data(), have);
  ssize_t got = recv(c->cfd, g.proxy.data() + have, g.proxy.size() - have, 0);
  if (got < 0) {
    if ((errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) && Rearm(c)) return;
    return Refuse(c, "closed");
  }
  if (got == 0 && have == 0) return Refuse(c, "closed");
  if (got == 0) hung_up = true;
  const size_t n = have + static_cast<size_t>(got);
  pp::Result r = pp::Parse(g.proxy.data(), n);
  switch (r.kind) {
    case pp::Kind::kMore:
      // the client's FIN came with what it sent; a full buffer cannot be 'more' (v1 ends within 107 bytes, v2 within
      // the buffer's size), kept as a bound all the same
      if (hung_up) return Refuse(c, "proxy_invalid", "connection ended inside the preface");
      if (n >= g.proxy.size()) return Refuse(c, "proxy_invalid", "preface too large");
      c->head.assign(reinterpret_cast<const char*>(g.proxy.data()), n);
      if (!Rearm(c)) return Refuse(c, "closed");
      return;
    case pp::Kind::kNone: return Refuse(c, "proxy_missing");
    case pp::Kind::kError: return Refuse(c, "proxy_invalid", std::move(r.reason));
    case pp::Kind::kDone: break;
  }
  c->proxied = true;
  if (!r.local && (r.family == pp::Family::kTcp4 || r.family == pp::Family::kTcp6)) {
    c->has_client = true;
    c->client_family = r.family;
    memcpy(c->client_src, r.src, sizeof r.src);
    memcpy(c->client_dst, r.dst, sizeof r.dst);
    c->client_sport = r.sport;
    c->client_dport = r.dport;
  }
  const uint8_t* rest = g.proxy.data() + r.used;
  const size_t rest_n = n - r.used;
  if (c->table) {
    // the ClientHello behind it, within what is left of the same deadline (preface.ts: one timer for the preface)
    c->phase = Phase::kPeek;
    c->head.clear();
    if (rest_n == 0) {
      if (hung_up) return Refuse(c, "client_hello_invalid", "connection ended inside the preface");
      if (!Rearm(c)) return Refuse(c, "closed");
      return;
    }
    if (g.peek.empty()) g.peek.resize(hello::kDefaultMax);
    memcpy(g.peek.data(), rest, rest_n);  // rest_n < the PROXY buffer's size = the peek buffer's
    return Hello(c, rest_n, hung_up);
  }
  c->head.assign(reinterpret_cast<const char*>(rest), rest_n);
  Route(c, c->cfg);
}

void ConnectReady(Conn* c) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(c->ufd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err != 0) return TargetFailed(c, ConnectCode(err), err);
  Connected(c);
}

void AcceptBatch(uint32_t lid, Listener& l);

// JS hears of the accepted connections in the next batch (the registry counts them, so a drain waits for them).
void Accept(uint32_t lid, Listener& l) {
  uint64_t before = g.opened;
  AcceptBatch(lid, l);
  if (g.opened != before) Schedule();
}

void AcceptBatch(uint32_t lid, Listener& l) {
  for (int i = 0; i < kAcceptBatch; i++) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    int fd = accept4(l.fd, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      int err = errno;
      if (err == EINTR || err == ECONNABORTED || err == EPROTO || err == EPERM) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) return;
      // a resource shortage: stop watching for a moment, or level triggering would spin on the queue
      epoll_event ev{};
      ev.events = 0;
      ev.data.u64 = kListenerTag | lid;
      epoll_ctl(g.loop.epfd, EPOLL_CTL_MOD, l.fd, &ev);
      l.paused_until = MonoMs() + kAcceptPauseMs;
      return;
    }
    Conn* c = new Conn();
    c->id = g.next_conn++;
    c->cfd = fd;
    c->started = WallMs();
    c->peer = ss;
    const ProxyIn* proxy_in = l.sni ? l.sni->proxy_in.get() : l.cfg->proxy_in.get();
    const Limit* limit = l.sni ? l.sni->limit.get() : l.cfg->limit.get();
    if (proxy_in != nullptr) {
      c->table = l.sni;
      c->cfg = l.cfg;  // a tcp listener's (the record names it); a passthrough's comes with its name
      uint16_t w[8], port;
      if (!AddressWords(ss, w, &port) || !pp::Matches(proxy_in->trusted, w)) {
        Refuse(c, "untrusted", "PROXY header sender not in proxy_protocol.trusted");
        continue;
      }
      c->phase = Phase::kProxy;
      c->deadline = MonoMs() + (l.sni ? l.sni->peek_ms : proxy_in->timeout_ms);
      g.connecting.emplace(c->id, c);
      // deferred: the header (or its start) came before the accept, as a passthrough listener's ClientHello (Peek)
      if (l.defer) ReadProxy(c, false);
      else if (!Rearm(c)) Refuse(c, "closed");
      continue;
    }
    if (l.sni) {
      c->table = l.sni;
      if (limit != nullptr && !BelowLimit(c, *limit)) continue;
      c->phase = Phase::kPeek;
      c->deadline = MonoMs() + l.sni->peek_ms;
      g.connecting.emplace(c->id, c);
      // deferred: the hello (or its start) came before the accept: read it now, and add the fd to the set only
      // if it must wait for more (Peek's Rearm); a whole hello costs no epoll_ctl at all
      if (l.defer) Peek(c, false);
      else if (!Rearm(c)) Refuse(c, "closed");
      continue;
    }
    c->cfg = l.cfg;
    // a tcp listener without a PROXY header is routed at accept: counted at once
    if (limit != nullptr && !Count(c, *limit)) continue;
    g.opened++;
    c->tried.assign(l.cfg->targets.size(), 0);
    KeyHash(c);
    TryConnect(c);
  }
}

void Sweep(uint64_t now) {
  std::vector<Conn*> late;
  for (auto& [id, c] : g.connecting) {
    if (c->deadline != 0 && c->deadline <= now) late.push_back(c);
  }
  for (Conn* c : late) {
    if (c->phase == Phase::kProxy) Refuse(c, "proxy_timeout");
    else if (c->phase == Phase::kPeek) Refuse(c, "timeout");
    else if (c->phase == Phase::kLinger) {
      if (c->watched) epoll_ctl(g.loop.epfd, EPOLL_CTL_DEL, c->cfd, nullptr);
      CloseFd(c->cfd);
      g.connecting.erase(c->id);
      delete c;
    } else {
      TargetFailed(c, "UPSTREAM_CONNECT_TIMEOUT", ETIMEDOUT);
    }
  }
  for (auto& [lid, l] : g.listeners) {
    if (l.paused_until == 0 || l.paused_until > now) continue;
    l.paused_until = 0;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kListenerTag | lid;
    epoll_ctl(g.loop.epfd, EPOLL_CTL_MOD, l.fd, &ev);
  }
}

bool NeedsSweep() {
  if (!g.connecting.empty()) return true;
  for (auto& [lid, l] : g.listeners) {
    if (l.paused_until != 0) return true;
  }
  return false;
}

void Loop() {
  epoll_event events[kMaxEvents];
  uint64_t last_sweep = MonoMs();
  for (;;) {
    int timeout = -1;
    {
      std::lock_guard<std::mutex> lock(g.mu);
      if (g.stopping) break;
      if (NeedsSweep()) timeout = kSweepMs;
      std::lock_guard<std::mutex> ends(g.ends_mu);
      if (g.batch_due != 0) {
        uint64_t now = MonoMs();
        int left = g.batch_due > now ? static_cast<int>(g.batch_due - now) : 0;
        timeout = timeout < 0 ? left : std::min(timeout, left);
      }
      g.asleep = timeout < 0;
    }
    int n = epoll_wait(g.loop.epfd, events, kMaxEvents, timeout);
    if (n < 0 && errno != EINTR) break;
    std::lock_guard<std::mutex> lock(g.mu);
    if (g.stopping) break;
    DrainEnded();  // least_conn counts what ended
    for (int i = 0; i < n; i++) {
      uint64_t data = events[i].data.u64;
      if (data == 0) {
        g.loop.TakeWake();
        continue;
      }
      if (data & kListenerTag) {
        auto it = g.listeners.find(static_cast<uint32_t>(data & ~kListenerTag));
        if (it != g.listeners.end()) Accept(it->first, it->second);
        continue;
      }
      auto it = g.connecting.find(data);
      if (it == g.connecting.end()) continue;
      Conn* c = it->second;
      const bool hung_up = (events[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
      if (c->phase == Phase::kProxy) ReadProxy(c, hung_up);
      else if (c->phase == Phase::kPeek) Peek(c, hung_up);
      else if (c->phase == Phase::kLinger) Linger(c);
      else ConnectReady(c);
    }
    uint64_t now = MonoMs();
    if (now - last_sweep >= static_cast<uint64_t>(kSweepMs)) {
      last_sweep = now;
      Sweep(now);
    }
    std::lock_guard<std::mutex> ends(g.ends_mu);
    g.asleep = false;
    if (g.batch_due != 0 && now >= g.batch_due) Post(now);
  }
}

// Called with g.mu held.
void EnsureStarted(Napi::Env env) {
  if (g.started) return;
  epoll_data_t wake{};
  wake.u64 = 0;  // the wake-up fd's tag: listeners and connections carry non-zero ones
  std::string error;
  if (!g.loop.Start(Loop, wake, "L4", &error)) throw Napi::Error::New(env, error);
  g.started = true;
}

void Wake() { g.loop.Wake(); }

// ---- JS side ----

Napi::Value Batch(Napi::Env env, std::vector<Record>& records, uint64_t opened, const std::vector<Held>& held) {
  Napi::Object batch = Napi::Object::New(env);
  batch.Set("opened", Napi::Number::New(env, static_cast<double>(opened)));
  if (!held.empty()) {
    Napi::Array out = Napi::Array::New(env, held.size());
    for (size_t i = 0; i < held.size(); i++) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("id", Napi::Number::New(env, static_cast<double>(held[i].id)));
      o.Set("config", Napi::Number::New(env, held[i].cfg));
      o.Set("target", Napi::Number::New(env, held[i].target));
      o.Set("key", Napi::String::New(env, held[i].key));
      out.Set(i, o);
    }
    batch.Set("held", out);
  }
  Napi::Array closed = Napi::Array::New(env, records.size());
  for (size_t i = 0; i < records.size(); i++) {
    const Record& r = records[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("id", Napi::Number::New(env, static_cast<double>(r.id)));
    o.Set("config", Napi::Number::New(env, r.cfg));
    if (r.table != 0) o.Set("table", Napi::Number::New(env, r.table));
    if (r.has_sni) o.Set("sni", Napi::String::New(env, r.sni));
    if (r.refused != nullptr) o.Set("refused", Napi::String::New(env, r.refused));
    if (!r.detail.empty()) o.Set("detail", Napi::String::New(env, r.detail));
    if (!r.key.empty()) o.Set("key", Napi::String::New(env, r.key));
    o.Set("target", Napi::Number::New(env, r.target));
    o.Set("address", Napi::String::New(env, r.addr));
    o.Set("port", Napi::Number::New(env, r.port));
    o.Set("bytesUp", Napi::Number::New(env, static_cast<double>(r.up)));
    o.Set("bytesDown", Napi::Number::New(env, static_cast<double>(r.down)));
    o.Set("durationMs", Napi::Number::New(env, static_cast<double>(r.duration_ms)));
    o.Set("closedBy", Napi::String::New(env, r.closed_by));
    if (r.err_code != nullptr) o.Set("error", Napi::String::New(env, r.err_code));
    Napi::Array failures = Napi::Array::New(env, r.failures.size());
    for (size_t k = 0; k < r.failures.size(); k++) {
      Napi::Object f = Napi::Object::New(env);
      f.Set("target", Napi::Number::New(env, r.failures[k].target));
      f.Set("code", Napi::String::New(env, r.failures[k].code));
      f.Set("errno", Napi::Number::New(env, r.failures[k].err));
      failures.Set(k, f);
    }
    o.Set("failures", failures);
    closed.Set(i, o);
  }
  batch.Set("closed", closed);
  return batch;
}

void Deliver(Napi::Env env, Napi::Function callback) {
  std::vector<Record> records;
  std::vector<Held> held;
  uint64_t opened;
  {
    std::lock_guard<std::mutex> lock(g.mu);
    DrainEnded();  // its records queue no other call: `scheduled` is still set
    records.swap(g.records);
    held.swap(g.held);
    opened = g.opened;
    g.opened = 0;
    // records are pushed under mu (held), relay ends under ends_mu: one that came after the drain asks again
    std::lock_guard<std::mutex> ends(g.ends_mu);
    g.scheduled = false;
    if (!g.ended.empty()) ScheduleLocked();
  }
  if (records.empty() && opened == 0 && held.empty()) return;
  if (env == nullptr || callback.IsEmpty()) return;
  callback.Call({Batch(env, records, opened, held)});
}

// Called with g.ends_mu held: queues the batch call now (at most one is queued at a time; it takes everything
// queued until it runs).
void Post(uint64_t now) {
  g.batch_due = 0;
  g.last_batch = now;
  if (!g.has_tsfn || g.scheduled) return;
  g.scheduled = true;
  if (g.tsfn.NonBlockingCall(Deliver) != napi_ok) g.scheduled = false;
}

// Called with g.ends_mu held (from the L4 thread, the relay thread or JS): something waits for JS. Queued at once
// when the last batch is kBatchMs old, else at its due time by the L4 thread, woken for it if it sleeps with no
// timeout.
void ScheduleLocked() {
  if (!g.has_tsfn || g.scheduled) return;
  uint64_t now = MonoMs();
  if (now >= g.last_batch + kBatchMs) return Post(now);
  if (g.batch_due != 0) return;
  g.batch_due = g.last_batch + kBatchMs;
  if (g.asleep) Wake();
}

// Called with g.mu held.
void Schedule() {
  std::lock_guard<std::mutex> lock(g.ends_mu);
  ScheduleLocked();
}

// A compile's `proxyIn` ({ trusted: string[], timeoutMs? }: the listener's proxy_protocol), or null when absent. The
// CIDRs are those the schema checked (checkCidr): one that does not parse here means the two disagree, refused.
std::shared_ptr<const ProxyIn> ProxyInArg(Napi::Env env, const Napi::Object& o, bool timed) {
  Napi::Value v = o.Get("proxyIn");
  if (v.IsUndefined() || v.IsNull()) return nullptr;
  if (!v.IsObject()) throw Napi::TypeError::New(env, "proxyIn must be an object");
  Napi::Object p = v.As<Napi::Object>();
  Napi::Value tv = p.Get("trusted");
  if (!tv.IsArray()) throw Napi::TypeError::New(env, "proxyIn.trusted must be an array");
  Napi::Array trusted = tv.As<Napi::Array>();
  auto in = std::make_shared<ProxyIn>();
  for (uint32_t i = 0; i < trusted.Length(); i++) {
    Napi::Value e = trusted.Get(i);
    if (!e.IsString()) throw Napi::TypeError::New(env, "proxyIn.trusted entries must be strings");
    const std::string text = e.As<Napi::String>().Utf8Value();
    pp::Cidr cidr;
    if (!pp::ParseCidr(text, &cidr)) throw Napi::RangeError::New(env, "proxyIn.trusted: \"" + text + "\" is not a CIDR");
    in->trusted.push_back(cidr);
  }
  if (timed) {
    in->timeout_ms = U32(p.Get("timeoutMs"), "proxyIn.timeoutMs");
    if (in->timeout_ms == 0) throw Napi::RangeError::New(env, "proxyIn.timeoutMs must be > 0");
  }
  return in;
}

// A compile's `limit` ({ table, max, ipv6Prefix }: limits.connections_per_ip, counted in client table `table`), or
// null when absent (the limit is off).
std::shared_ptr<const Limit> LimitArg(Napi::Env env, const Napi::Object& o) {
  Napi::Value v = o.Get("limit");
  if (v.IsUndefined() || v.IsNull()) return nullptr;
  if (!v.IsObject()) throw Napi::TypeError::New(env, "limit must be an object");
  Napi::Object p = v.As<Napi::Object>();
  auto limit = std::make_shared<Limit>();
  limit->table = clients::Find(U32(p.Get("table"), "limit.table"));
  if (!limit->table) throw Napi::RangeError::New(env, "limit.table: no such client table");
  limit->max = U32(p.Get("max"), "limit.max");
  if (limit->max == 0) throw Napi::RangeError::New(env, "limit.max must be > 0");
  limit->prefix = U32(p.Get("ipv6Prefix"), "limit.ipv6Prefix");
  if (limit->prefix > 128) throw Napi::RangeError::New(env, "limit.ipv6Prefix must be 0..128");
  return limit;
}

// l4Init(onBatch): the callback that receives { opened, closed: [...] } batches (at most one per kBatchMs).
Napi::Value Init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsFunction()) throw Napi::TypeError::New(env, "l4Init(onBatch)");
  std::lock_guard<std::mutex> lock(g.mu);
  if (g.has_tsfn) throw Napi::Error::New(env, "l4Init: already initialised");
  g.tsfn = Napi::ThreadSafeFunction::New(env, info[0].As<Napi::Function>(), "portico-l4", 0, 1);
  g.tsfn.Unref(env);  // batches never keep the process alive; the registry does while connections are open
  std::lock_guard<std::mutex> ends(g.ends_mu);
  g.has_tsfn = true;
  any.store(true);
  return env.Undefined();
}

// l4Compile({ targets: [{ ip, port, weight }], balance, connectMs, idleMs, lifetimeMs?, halfClosedMs?, proxy, halfClose?, proxyIn?, limit? })
// -> config id.
Napi::Value Compile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "l4Compile(config)");
  Napi::Object o = info[0].As<Napi::Object>();
  auto cfg = std::make_shared<Config>();
  Napi::Value tv = o.Get("targets");
  if (!tv.IsArray()) throw Napi::TypeError::New(env, "l4Compile: targets must be an array");
  Napi::Array targets = tv.As<Napi::Array>();
  for (uint32_t i = 0; i < targets.Length(); i++) {
    Napi::Object t = targets.Get(i).As<Napi::Object>();
    std::string ip = t.Get("ip").As<Napi::String>().Utf8Value();
    uint32_t port = U32(t.Get("port"), "port");
    if (port > 65535) throw Napi::RangeError::New(env, "l4Compile: port must be 0..65535");
    Target target;
    target.weight = t.Get("weight").As<Napi::Number>().DoubleValue();
    auto* v4 = reinterpret_cast<sockaddr_in*>(&target.addr);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&target.addr);
    auto* un = reinterpret_cast<sockaddr_un*>(&target.addr);
    if (!ip.empty() && ip[0] == '/') {
      // a `unix:/path` target (schema.ts: host is the path, port 0)
      if (port != 0 || ip.size() >= sizeof un->sun_path || ip.find('\0') != std::string::npos)
        throw Napi::RangeError::New(env, "l4Compile: a unix target is an absolute path of at most 107 bytes with port 0");
      un->sun_family = AF_UNIX;
      std::memcpy(un->sun_path, ip.data(), ip.size());
      target.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + ip.size() + 1);
    } else if (inet_pton(AF_INET, ip.c_str(), &v4->sin_addr) == 1) {
      v4->sin_family = AF_INET;
      v4->sin_port = htons(static_cast<uint16_t>(port));
      target.len = sizeof *v4;
    } else if (inet_pton(AF_INET6, ip.c_str(), &v6->sin6_addr) == 1) {
      v6->sin6_family = AF_INET6;
      v6->sin6_port = htons(static_cast<uint16_t>(port));
      target.len = sizeof *v6;
    } else {
      throw Napi::TypeError::New(env, "l4Compile: target ip must be an IP literal or a unix socket's path, got \"" + ip + "\"");
    }
    cfg->targets.push_back(target);
  }
  cfg->w.reserve(cfg->targets.size());
  for (const Target& t : cfg->targets) cfg->w.push_back(t.weight);
  const std::string balance = o.Get("balance").As<Napi::String>().Utf8Value();
  if (balance == "least_conn") cfg->balance = Balance::kLeastConn;
  else if (balance == "random_two") cfg->balance = Balance::kRandomTwo;
  else if (balance == "hash") cfg->balance = Balance::kHash;
  else if (balance != "round_robin") throw Napi::RangeError::New(env, "l4Compile: balance must be round_robin, least_conn, random_two or hash");
  if (cfg->balance == Balance::kHash) {
    // balancer.ts buildMaglevTable's slots, each a target index
    Napi::Value tab = o.Get("table");
    if (!tab.IsTypedArray() || tab.As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array)
      throw Napi::TypeError::New(env, "l4Compile: a hash compile needs its Maglev table (a Uint32Array)");
    Napi::Uint32Array slots = tab.As<Napi::Uint32Array>();
    cfg->table.assign(slots.Data(), slots.Data() + slots.ElementLength());
    for (uint32_t v : cfg->table)
      if (v >= cfg->targets.size()) throw Napi::RangeError::New(env, "l4Compile: a table slot names no target");
  }
  cfg->connect_ms = U32(o.Get("connectMs"), "connectMs");
  cfg->idle_ms = U32(o.Get("idleMs"), "idleMs");
  cfg->lifetime_ms = OptionalMs(o.Get("lifetimeMs"), "lifetimeMs");
  cfg->half_closed_ms = OptionalMs(o.Get("halfClosedMs"), "halfClosedMs");
  uint32_t proxy = U32(o.Get("proxy"), "proxy");
  if (proxy > 2) throw Napi::RangeError::New(env, "l4Compile: proxy must be 0, 1 or 2");
  cfg->proxy = static_cast<int>(proxy);
  Napi::Value half = o.Get("halfClose");
  cfg->half_close = half.IsUndefined() || half.ToBoolean();
  cfg->proxy_in = ProxyInArg(env, o, true);
  cfg->limit = LimitArg(env, o);
  Napi::Value slow = o.Get("slowStartMs");
  if (!slow.IsUndefined()) {
    cfg->slow_start_ms = U32(slow, "slowStartMs");
    const double floor = o.Get("slowStartFloor").ToNumber().DoubleValue();
    if (!(floor >= 0 && floor <= 1)) throw Napi::RangeError::New(env, "l4Compile: slowStartFloor must be 0..1");
    cfg->slow_start_floor = floor;
  }
  std::lock_guard<std::mutex> lock(g.mu);
  cfg->id = g.next_config++;
  g.configs.emplace(cfg->id, cfg);
  return Napi::Number::New(env, cfg->id);
}

// l4CompileSni({ entries: [{ sni, config }], peekMs, proxyIn?, limit? }) -> table id (ids shared with configs): a passthrough-only
// TLS listener's names, first entry winning on duplicates as PassthroughTable.
Napi::Value CompileSni(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "l4CompileSni(table)");
  Napi::Object o = info[0].As<Napi::Object>();
  Napi::Value ev = o.Get("entries");
  if (!ev.IsArray()) throw Napi::TypeError::New(env, "l4CompileSni: entries must be an array");
  Napi::Array entries = ev.As<Napi::Array>();
  uint32_t peek_ms = U32(o.Get("peekMs"), "peekMs");
  auto proxy_in = ProxyInArg(env, o, false);
  auto limit = LimitArg(env, o);
  std::lock_guard<std::mutex> lock(g.mu);
  std::vector<std::string> names;
  std::vector<std::shared_ptr<Config>> configs;
  for (uint32_t i = 0; i < entries.Length(); i++) {
    Napi::Object e = entries.Get(i).As<Napi::Object>();
    auto it = g.configs.find(U32(e.Get("config"), "config"));
    if (it == g.configs.end()) throw Napi::Error::New(env, "l4CompileSni: no such L4 config");
    names.push_back(e.Get("sni").As<Napi::String>().Utf8Value());
    configs.push_back(it->second);
  }
  auto table = std::make_shared<SniTable>(names, std::move(configs));
  table->peek_ms = peek_ms;
  table->proxy_in = std::move(proxy_in);
  table->limit = std::move(limit);
  table->id = g.next_config++;
  g.tables.emplace(table->id, table);
  return Napi::Number::New(env, table->id);
}

std::shared_ptr<Config> ConfigArg(const Napi::CallbackInfo& info, size_t i) {
  uint32_t id = U32(info[i], "config id");
  auto it = g.configs.find(id);
  if (it == g.configs.end()) throw Napi::Error::New(info.Env(), "no such L4 config");
  return it->second;
}

// l4Targets(configId, up: boolean[], remote: number[], rampUntil?: number[]): target states (health, drain, passive,
// panic folded in by JS) and each target's slow-start end (Date.now's ms; 0 or past: not ramping).
Napi::Value Targets(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[1].IsArray() || !info[2].IsArray()) throw Napi::TypeError::New(env, "l4Targets(configId, up, remote, rampUntil?)");
  const bool ramps = info.Length() > 3 && info[3].IsArray();
  std::lock_guard<std::mutex> lock(g.mu);
  auto cfg = ConfigArg(info, 0);
  Napi::Array up = info[1].As<Napi::Array>();
  Napi::Array remote = info[2].As<Napi::Array>();
  Napi::Array ramp = ramps ? info[3].As<Napi::Array>() : Napi::Array::New(env);
  for (uint32_t i = 0; i < cfg->targets.size() && i < up.Length(); i++) {
    cfg->targets[i].up = up.Get(i).ToBoolean();
    if (i < remote.Length()) cfg->targets[i].remote = U32(remote.Get(i), "remote");
    if (i < ramp.Length()) cfg->targets[i].ramp_until = ramp.Get(i).ToNumber().DoubleValue();
  }
  return env.Undefined();
}

// l4Pins(configId, full, keys: string[], targets: number[], unset: string[]): a hash compile's pins (sticky.ts
// PinUpdate, target addresses as indices of the compile): `full` replaces them all; then `unset` go, keys[i] -> targets[i] set.
Napi::Value Pins(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 5 || !info[2].IsArray() || !info[3].IsArray() || !info[4].IsArray())
    throw Napi::TypeError::New(env, "l4Pins(configId, full, keys, targets, unset)");
  Napi::Array keys = info[2].As<Napi::Array>();
  Napi::Array targets = info[3].As<Napi::Array>();
  Napi::Array unset = info[4].As<Napi::Array>();
  if (keys.Length() != targets.Length()) throw Napi::RangeError::New(env, "l4Pins: one target per key");
  // read before the lock: a throw on a bad entry leaves the pins as they were
  std::vector<std::pair<std::string, int32_t>> set;
  set.reserve(keys.Length());
  for (uint32_t i = 0; i < keys.Length(); i++) {
    Napi::Value k = keys.Get(i);
    if (!k.IsString()) throw Napi::TypeError::New(env, "l4Pins: keys are strings");
    set.emplace_back(k.As<Napi::String>().Utf8Value(), static_cast<int32_t>(U32(targets.Get(i), "target")));
  }
  std::vector<std::string> gone;
  gone.reserve(unset.Length());
  for (uint32_t i = 0; i < unset.Length(); i++) {
    Napi::Value k = unset.Get(i);
    if (!k.IsString()) throw Napi::TypeError::New(env, "l4Pins: keys are strings");
    gone.push_back(k.As<Napi::String>().Utf8Value());
  }
  std::lock_guard<std::mutex> lock(g.mu);
  auto cfg = ConfigArg(info, 0);
  if (cfg->balance != Balance::kHash) throw Napi::Error::New(env, "l4Pins: not a hash compile");
  for (const auto& [key, target] : set)
    if (static_cast<size_t>(target) >= cfg->targets.size()) throw Napi::RangeError::New(env, "l4Pins: no such target");
  if (info[1].ToBoolean()) cfg->pins.clear();
  for (const std::string& key : gone) cfg->pins.erase(key);
  for (auto& [key, target] : set) cfg->pins[std::move(key)] = target;
  return env.Undefined();
}

// l4HashKey(address, proxied?) -> { key, hash } | null: the key and hash l4.cc gives a client at `address` (an IP
// literal, an IPv6 one with an optional zone) as a socket's peer, or with `proxied` as a PROXY header's source (tcp4
// for an IPv4 literal, else tcp6). For the fuzz test that holds them to connectionKey and hashKey.
Napi::Value HashKey(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "l4HashKey(address, proxied?)");
  const bool proxied = info.Length() > 1 && info[1].ToBoolean().Value();
  sockaddr_storage ss{};
  if (!SockaddrOfLiteral(info[0].As<Napi::String>().Utf8Value(), &ss, !proxied)) return env.Null();
  std::string key;
  if (proxied) {
    uint16_t w[8];
    uint16_t port = 0;
    AddressWords(ss, w, &port);
    key = ProxiedClientKey(ss.ss_family == AF_INET ? pp::Family::kTcp4 : pp::Family::kTcp6, w, kWholeAddress);
  } else {
    key = SocketClientKey(ss, kWholeAddress);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("key", Napi::String::New(env, key));
  out.Set("hash", Napi::Number::New(env, hashpick::HashString(key)));
  return out;
}

// l4HashPick(table: Uint32Array, eligible: boolean[], key: string, pinned: number) -> number: the pick of a hash
// compile (PickHash) over `table` with these eligible targets, `pinned` the key's pin (-1: none); -1 when none.
Napi::Value HashPick(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsTypedArray() || !info[1].IsArray() || !info[2].IsString() || !info[3].IsNumber())
    throw Napi::TypeError::New(env, "l4HashPick(table, eligible, key, pinned)");
  if (info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array) throw Napi::TypeError::New(env, "l4HashPick: table is a Uint32Array");
  Napi::Uint32Array slots = info[0].As<Napi::Uint32Array>();
  Napi::Array eligible = info[1].As<Napi::Array>();
  Config cfg;
  cfg.balance = Balance::kHash;
  cfg.table.assign(slots.Data(), slots.Data() + slots.ElementLength());
  cfg.targets.resize(eligible.Length());
  for (uint32_t i = 0; i < eligible.Length(); i++) cfg.targets[i].up = eligible.Get(i).ToBoolean();
  cfg.w.assign(cfg.targets.size(), 1);
  for (uint32_t v : cfg.table)
    if (v >= cfg.targets.size()) throw Napi::RangeError::New(env, "l4HashPick: a table slot names no target");
  Conn c;
  c.tried.assign(cfg.targets.size(), 0);
  c.hash_key = info[2].As<Napi::String>().Utf8Value();
  c.hash = hashpick::HashString(c.hash_key);
  const int32_t pinned = info[3].As<Napi::Number>().Int32Value();
  if (pinned >= 0 && static_cast<size_t>(pinned) < cfg.targets.size()) cfg.pins.emplace(c.hash_key, pinned);
  return Napi::Number::New(env, PickHash(cfg, c));
}

// Called with g.mu held: a closed-connection record of compile `id` waits for its batch.
bool RecordPending(uint32_t id) {
  for (const Record& r : g.records)
    if (r.cfg == id) return true;
  return false;
}

// l4Active(configId) -> per-target open connections (connecting or relayed) of this compile, or null once the
// compile is forgotten, its last connection ended and that connection's record went out in a batch: until then
// the zeros (JS takes the compile's counts off its targets with them, and names the record by the compile).
Napi::Value Active(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::lock_guard<std::mutex> lock(g.mu);
  DrainEnded();  // the counts of relays that ended
  uint32_t id = U32(info[0], "config id");
  std::shared_ptr<Config> cfg;
  auto it = g.configs.find(id);
  if (it != g.configs.end()) cfg = it->second;
  auto f = g.forgotten.find(id);
  if (!cfg && f != g.forgotten.end()) {
    cfg = f->second;
    bool idle = true;
    for (const Target& t : cfg->targets) idle = idle && t.active == 0;
    if (idle && cfg.use_count() == 2 && !RecordPending(id)) {  // the map's and ours: no connection holds it
      g.forgotten.erase(f);
      return env.Null();
    }
  }
  if (!cfg) return env.Null();
  Napi::Array out = Napi::Array::New(env, cfg->targets.size());
  for (uint32_t i = 0; i < cfg->targets.size(); i++) out.Set(i, Napi::Number::New(env, cfg->targets[i].active));
  return out;
}

// l4Forget(configId): no listener takes this config any more (connections keep their own reference).
Napi::Value Forget(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(g.mu);
  uint32_t id = U32(info[0], "config id");
  auto it = g.configs.find(id);
  if (it != g.configs.end()) {
    // kept for l4Active until its last connection ended (its counts must reach JS's pool once more)
    g.forgotten.emplace(id, it->second);
    g.configs.erase(it);
  }
  g.tables.erase(id);
  return info.Env().Undefined();
}

// What listener `l` serves: config id (a tcp listener) or SNI table id (passthrough-only TLS). Called with g.mu held.
void Serve(const Napi::CallbackInfo& info, size_t i, Listener* l) {
  uint32_t id = U32(info[i], "config id");
  auto t = g.tables.find(id);
  if (t != g.tables.end()) {
    l->sni = t->second;
    l->cfg = nullptr;
    return;
  }
  l->cfg = ConfigArg(info, i);
  l->sni = nullptr;
}

// l4Listen(fd, configId) -> listener id: the addon accepts on the listening socket from now on and owns the fd.
Napi::Value Listen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2) throw Napi::TypeError::New(env, "l4Listen(fd, configId)");
  int fd = static_cast<int>(U32(info[0], "fd"));
  std::lock_guard<std::mutex> lock(g.mu);
  if (!g.has_tsfn) throw Napi::Error::New(env, "l4Listen: call l4Init first");
  Listener l;
  Serve(info, 1, &l);
  EnsureStarted(env);
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) throw Napi::Error::New(env, std::string("l4Listen: fcntl: ") + strerror(errno));
  // keep-alive and TCP_NODELAY set once here: accepted sockets inherit them (no setsockopt per connection)
  int one = 1, idle = kKeepIdleS;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  uint32_t lid = g.next_listener++;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kListenerTag | lid;
  if (epoll_ctl(g.loop.epfd, EPOLL_CTL_ADD, fd, &ev) != 0) throw Napi::Error::New(env, std::string("l4Listen: epoll_ctl: ") + strerror(errno));
  l.fd = fd;
  g.listeners.emplace(lid, l);
  return Napi::Number::New(env, lid);
}

// l4Use(listenerId, configId): the config its next connections take (a reload).
Napi::Value Use(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(g.mu);
  auto it = g.listeners.find(U32(info[0], "listener id"));
  if (it == g.listeners.end()) throw Napi::Error::New(info.Env(), "no such L4 listener");
  Serve(info, 1, &it->second);
  return info.Env().Undefined();
}

// l4Defer(listenerId[, on]) -> seconds: with `on`, sets or clears TCP_DEFER_ACCEPT on a listener whose clients speak
// first (a passthrough-only TLS listener: the ClientHello); returns what the kernel has now (0: accepted at the
// handshake). Deferred, the accept and the hello's read take one wake-up of the L4 thread, not two.
Napi::Value Defer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::lock_guard<std::mutex> lock(g.mu);
  auto it = g.listeners.find(U32(info[0], "listener id"));
  if (it == g.listeners.end()) throw Napi::Error::New(env, "no such L4 listener");
  Listener& l = it->second;
  if (info.Length() > 1 && info[1].IsBoolean()) {
    bool on = info[1].As<Napi::Boolean>().Value();
    int secs = on ? kDeferAcceptS : 0;
    if (setsockopt(l.fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof secs) != 0) throw Napi::Error::New(env, std::string("l4Defer: setsockopt: ") + strerror(errno));
    l.defer = on;
  }
  int secs = 0;
  socklen_t len = sizeof secs;
  if (getsockopt(l.fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, &len) != 0) throw Napi::Error::New(env, std::string("l4Defer: getsockopt: ") + strerror(errno));
  return Napi::Number::New(env, secs);
}

// l4Release(listenerId) -> fd: stops accepting and gives the listening socket back (open, not deferring) to the caller.
// l4Close(listenerId): stops accepting and closes it. Connections already accepted go on either way.
int Unlisten(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(g.mu);
  auto it = g.listeners.find(U32(info[0], "listener id"));
  if (it == g.listeners.end()) throw Napi::Error::New(info.Env(), "no such L4 listener");
  int fd = it->second.fd;
  epoll_ctl(g.loop.epfd, EPOLL_CTL_DEL, fd, nullptr);
  if (it->second.defer) {
    int off = 0;
    setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &off, sizeof off);
  }
  g.listeners.erase(it);
  return fd;
}

Napi::Value ReleaseListener(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), Unlisten(info)); }

Napi::Value CloseListener(const Napi::CallbackInfo& info) {
  close(Unlisten(info));
  return info.Env().Undefined();
}

// l4CloseAll(): the end of the shutdown grace: relayed connections close (reported as "shutdown"), connecting
// ones too.
Napi::Value CloseAll(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(g.mu);
  {
    std::lock_guard<std::mutex> ends(g.ends_mu);
    for (auto& [rid, c] : g.relayed) g.engine->RequestClose(rid, Reason::kShutdown);
  }
  std::vector<Conn*> connecting;
  for (auto& [id, c] : g.connecting) connecting.push_back(c);
  for (Conn* c : connecting) {
    if (c->phase == Phase::kConnect) {
      Fail(c, "shutdown", "SHUTDOWN");
      continue;
    }
    // not routed yet (peeking) or already refused (lingering): closed without a record, as the JS preface reader
    if (c->watched) epoll_ctl(g.loop.epfd, EPOLL_CTL_DEL, c->cfd, nullptr);
    CloseFd(c->cfd);
    g.connecting.erase(c->id);
    delete c;
  }
  return info.Env().Undefined();
}

// l4Stats() -> { listeners, connecting, relayed }: what is open now (tests, the drain).
Napi::Value Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::lock_guard<std::mutex> lock(g.mu);
  Napi::Object o = Napi::Object::New(env);
  o.Set("listeners", Napi::Number::New(env, static_cast<double>(g.listeners.size())));
  o.Set("connecting", Napi::Number::New(env, static_cast<double>(g.connecting.size())));
  DrainEnded();
  std::lock_guard<std::mutex> ends(g.ends_mu);
  o.Set("relayed", Napi::Number::New(env, static_cast<double>(g.relayed.size())));
  return o;
}

// l4ParseHello(buf) -> { kind: 'more'|'done'|'not_tls'|'error', sni? }: the C++ ClientHello reader, for the fuzz
// test that holds it to src/wire/client-hello.ts.
Napi::Value ParseHello(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsBuffer()) throw Napi::TypeError::New(env, "l4ParseHello(buffer)");
  auto buf = info[0].As<Napi::Buffer<uint8_t>>();
  hello::Result r = hello::Parse(buf.Data(), buf.Length());
  Napi::Object o = Napi::Object::New(env);
  const char* kinds[] = {"more", "done", "not_tls", "error"};
  o.Set("kind", Napi::String::New(env, kinds[static_cast<int>(r.kind)]));
  if (r.kind == hello::Kind::kDone && r.has_sni) o.Set("sni", Napi::String::New(env, r.sni));
  if (r.kind == hello::Kind::kDone) o.Set("recordBytes", Napi::Number::New(env, static_cast<double>(r.record_bytes)));
  if (r.kind == hello::Kind::kError) o.Set("reason", Napi::String::New(env, r.reason));
  return o;
}

// l4ParseProxy(buf, maxV2Bytes?) -> { kind: 'more'|'none'|'done'|'error', ... }: the C++ PROXY header reader, for the
// fuzz test that holds it to src/wire/proxy-protocol.ts. On 'done': used, version, command, family, source and
// destination ({ address, port }; a unix path as the bytes of `path`, for the test to decode as JS does) and tlvs.
Napi::Value ParseProxy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsBuffer()) throw Napi::TypeError::New(env, "l4ParseProxy(buffer, maxV2Bytes?)");
  auto buf = info[0].As<Napi::Buffer<uint8_t>>();
  const size_t max = info.Length() > 1 && info[1].IsNumber() ? U32(info[1], "maxV2Bytes") : pp::kDefaultV2Max;
  pp::Result r = pp::Parse(buf.Data(), buf.Length(), max);
  Napi::Object o = Napi::Object::New(env);
  const char* kinds[] = {"more", "none", "done", "error"};
  o.Set("kind", Napi::String::New(env, kinds[static_cast<int>(r.kind)]));
  if (r.kind == pp::Kind::kError) o.Set("reason", Napi::String::New(env, r.reason));
  if (r.kind != pp::Kind::kDone) return o;
  const char* families[] = {"tcp4", "tcp6", "unix", "unknown"};
  o.Set("used", Napi::Number::New(env, static_cast<double>(r.used)));
  o.Set("version", Napi::Number::New(env, r.version));
  o.Set("command", Napi::String::New(env, r.local ? "local" : "proxy"));
  o.Set("family", Napi::String::New(env, families[static_cast<int>(r.family)]));
  auto endpoint = [&](const uint16_t w[8], uint16_t port, size_t path_at, size_t path_len) {
    Napi::Object e = Napi::Object::New(env);
    if (r.family == pp::Family::kUnix) {
      e.Set("path", Napi::Buffer<uint8_t>::Copy(env, buf.Data() + path_at, path_len));
      e.Set("port", Napi::Number::New(env, 0));
    } else {
      e.Set("address", Napi::String::New(env, pp::AddressText(r.family, w)));
      e.Set("port", Napi::Number::New(env, port));
    }
    return e;
  };
  if (!r.local && r.family != pp::Family::kUnknown) {
    o.Set("source", endpoint(r.src, r.sport, r.src_path_at, r.src_path_len));
    o.Set("destination", endpoint(r.dst, r.dport, r.dst_path_at, r.dst_path_len));
  }
  Napi::Array tlvs = Napi::Array::New(env, r.tlvs.size());
  for (size_t i = 0; i < r.tlvs.size(); i++) {
    Napi::Object t = Napi::Object::New(env);
    t.Set("type", Napi::Number::New(env, r.tlvs[i].type));
    t.Set("value", Napi::Buffer<uint8_t>::Copy(env, buf.Data() + r.tlvs[i].at, r.tlvs[i].len));
    tlvs.Set(i, t);
  }
  o.Set("tlvs", tlvs);
  return o;
}

// l4MatchCidrs(cidrs, address) -> boolean | null: whether the addon's CIDR matcher (the one of proxyIn.trusted)
// takes `address` (an IP literal, as a socket names its peer), null when a CIDR does not parse: for the test that
// holds it to createCidrMatcher.
Napi::Value MatchCidrs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsArray() || !info[1].IsString()) throw Napi::TypeError::New(env, "l4MatchCidrs(cidrs, address)");
  Napi::Array list = info[0].As<Napi::Array>();
  std::vector<pp::Cidr> cidrs;
  for (uint32_t i = 0; i < list.Length(); i++) {
    pp::Cidr c;
    if (!pp::ParseCidr(list.Get(i).ToString().Utf8Value(), &c)) return env.Null();
    cidrs.push_back(c);
  }
  const std::string address = info[1].As<Napi::String>().Utf8Value();
  sockaddr_storage ss{};
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (inet_pton(AF_INET, address.c_str(), &v4->sin_addr) == 1) ss.ss_family = AF_INET;
  else if (inet_pton(AF_INET6, address.c_str(), &v6->sin6_addr) == 1) ss.ss_family = AF_INET6;
  else return Napi::Boolean::New(env, false);
  uint16_t w[8], port;
  return Napi::Boolean::New(env, AddressWords(ss, w, &port) && pp::Matches(cidrs, w));
}

void Teardown(void*) {
  {
    std::lock_guard<std::mutex> lock(g.mu);
    if (!g.started) {
      std::lock_guard<std::mutex> ends(g.ends_mu);
      if (g.has_tsfn) g.tsfn.Release();
      g.has_tsfn = false;
      return;
    }
    g.stopping = true;
  }
  Wake();
  g.loop.Join();
  std::lock_guard<std::mutex> lock(g.mu);
  for (auto& [lid, l] : g.listeners) close(l.fd);
  g.listeners.clear();
  for (auto& [id, c] : g.connecting) {
    CloseFd(c->cfd);
    CloseFd(c->ufd);
    delete c;
  }
  g.connecting.clear();
  std::lock_guard<std::mutex> ends(g.ends_mu);
  if (g.has_tsfn) g.tsfn.Release();
  g.has_tsfn = false;
}

}  // namespace

bool ClaimRelayEnd(const RelayEnd& end) {
  if (!any.load(std::memory_order_relaxed)) return false;
  // ends_mu only: the record is made under mu later (DrainEnded, by the L4 thread or the batch call)
  std::lock_guard<std::mutex> lock(g.ends_mu);
  auto it = g.relayed.find(end.id);
  if (it == g.relayed.end()) return false;
  g.ended.emplace_back(it->second, end);
  g.relayed.erase(it);
  ScheduleLocked();
  return true;
}

void Register(Napi::Env env, Napi::Object exports, RelayEngine* engine) {
  g.engine = engine;
  exports.Set("l4Init", Napi::Function::New(env, Init, "l4Init"));
  exports.Set("l4Compile", Napi::Function::New(env, Compile, "l4Compile"));
  exports.Set("l4Targets", Napi::Function::New(env, Targets, "l4Targets"));
  exports.Set("l4Pins", Napi::Function::New(env, Pins, "l4Pins"));
  exports.Set("l4HashKey", Napi::Function::New(env, HashKey, "l4HashKey"));
  exports.Set("l4HashPick", Napi::Function::New(env, HashPick, "l4HashPick"));
  exports.Set("l4CompileSni", Napi::Function::New(env, CompileSni, "l4CompileSni"));
  exports.Set("l4ParseHello", Napi::Function::New(env, ParseHello, "l4ParseHello"));
  exports.Set("l4ParseProxy", Napi::Function::New(env, ParseProxy, "l4ParseProxy"));
  exports.Set("l4MatchCidrs", Napi::Function::New(env, MatchCidrs, "l4MatchCidrs"));
  exports.Set("l4Forget", Napi::Function::New(env, Forget, "l4Forget"));
  exports.Set("l4Active", Napi::Function::New(env, Active, "l4Active"));
  exports.Set("l4Listen", Napi::Function::New(env, Listen, "l4Listen"));
  exports.Set("l4Use", Napi::Function::New(env, Use, "l4Use"));
  exports.Set("l4Defer", Napi::Function::New(env, Defer, "l4Defer"));
  exports.Set("l4Release", Napi::Function::New(env, ReleaseListener, "l4Release"));
  exports.Set("l4Close", Napi::Function::New(env, CloseListener, "l4Close"));
  exports.Set("l4CloseAll", Napi::Function::New(env, CloseAll, "l4CloseAll"));
  exports.Set("l4Stats", Napi::Function::New(env, Stats, "l4Stats"));
  napi_add_env_cleanup_hook(env, Teardown, nullptr);
}

}  // namespace portico::l4
