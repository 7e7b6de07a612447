// Connection-rate load generator and backend for bench/scenarios/connrate.ts, built at bench time with g++ (a Node
// client costs more CPU per connection than the proxies it measures, on a core it shares with the backend).
// One thread, one epoll set, non-blocking sockets, every loop bounded; it never exits on a peer's misbehaviour,
// it counts it. Not part of Portico: nothing in src/ uses it.
//
//   connrate server --request FILE --reply-bytes N [--port P]
//       Accepts on 127.0.0.1:P (0: any; prints {"port":P}), reads exactly the bytes of FILE from each
//       connection, answers N pattern bytes and closes (the server closes first, so TIME_WAIT stays on this side
//       and the client's ports are free at once). Anything else is closed unanswered and counted as bad. On
//       SIGTERM/SIGINT prints {"served":S,"bad":B} and exits 0.
//   connrate client --port P --request FILE --reply-bytes N --concurrency C (--duration S | --count K)
//                   [--sources K] [--timeout-ms T]
//       Keeps C connections in flight: connect (from 127.0.0.1 .. 127.0.0.K in turn, ports chosen at connect
//       with IP_BIND_ADDRESS_NO_PORT), send FILE, read exactly N pattern bytes then EOF, close, start the next.
//       Prints {"completed":..,"elapsedS":..,"p50Us":..,"p90Us":..,"p99Us":..,"maxUs":..,"meanUs":..,"cpuUs":..,
//       "sysUs":..,"errors":{..}} (latencies: connect to EOF; CPU: its own user+sys); exit 0.
//       --rate R: open loop instead (wrk2's idea): a new connection starts every 1/R s whatever the others do, at
//       most C in flight (a start with none free is counted as "no free slot"); latencies run from the scheduled
//       start, so a late start counts. --http 1: the reply is any HTTP/1.1 200 answer read to EOF (--reply-bytes
//       not needed); "firstP50Us"/"firstP90Us" add the time from the request's write to the answer's first byte.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

namespace {

constexpr size_t kMaxRequest = 64 * 1024;
constexpr size_t kMaxReply = 64 * 1024;
constexpr int kMaxEvents = 256;
constexpr int kMaxConcurrency = 10000;

volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

[[noreturn]] void die(const char* what) {
  fprintf(stderr, "connrate: %s: %s\n", what, strerror(errno));
  exit(2);
}

[[noreturn]] void usage(const char* why) {
  fprintf(stderr, "connrate: %s\nusage: connrate server --request FILE --reply-bytes N [--port P]\n"
                  "       connrate client --port P --request FILE (--reply-bytes N | --http 1) --concurrency C (--duration S | --count K) [--rate R] [--sources K] [--timeout-ms T]\n", why);
  exit(2);
}

std::vector<char> read_file(const char* path) {
  FILE* f = fopen(path, "rb");
  if (f == nullptr) die(path);
  std::vector<char> out(kMaxRequest + 1);
  size_t n = fread(out.data(), 1, out.size(), f);
  fclose(f);
  if (n == 0 || n > kMaxRequest) usage("request file empty or larger than 64 KiB");
  out.resize(n);
  return out;
}

std::vector<char> pattern(size_t n) {
  std::vector<char> out(n);
  for (size_t i = 0; i < n; i++) out[i] = char('a' + i % 26);
  return out;
}

long arg_long(const char* v, long lo, long hi, const char* name) {
  char* end = nullptr;
  long x = strtol(v, &end, 10);
  if (end == v || *end != '\0' || x < lo || x > hi) usage(name);
  return x;
}

// ---- server ---------------------------------------------------------------------------------------------

struct ServerConn {
  size_t got = 0;    // request bytes matched so far
  size_t sent = 0;   // reply bytes written
  bool replying = false;
};

int run_server(int port, const std::vector<char>& request, const std::vector<char>& reply) {
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (lfd < 0) die("socket");
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) die("bind");
  if (listen(lfd, 4096) != 0) die("listen");
  socklen_t alen = sizeof addr;
  getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &alen);
  printf("{\"port\":%d}\n", ntohs(addr.sin_port));
  fflush(stdout);

  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = lfd;
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  std::map<int, ServerConn> conns;
  uint64_t served = 0, bad = 0;
  std::vector<char> buf(kMaxRequest);
  epoll_event events[kMaxEvents];
  auto finish = [&](int fd, bool ok) {
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
    close(fd);
    conns.erase(fd);
    if (ok) served++;
    else bad++;
  };
  while (!g_stop) {
    int n = epoll_wait(ep, events, kMaxEvents, 200);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int i = 0; i < n; i++) {
      int fd = events[i].data.fd;
      if (fd == lfd) {
        for (int k = 0; k < 1024; k++) {
          int c = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (c < 0) break;  // EAGAIN, or a connection reset before accept: nothing to count
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          epoll_event cev{};
          cev.events = EPOLLIN | EPOLLRDHUP;
          cev.data.fd = c;
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
          conns[c] = ServerConn{};
        }
        continue;
      }
      auto it = conns.find(fd);
      if (it == conns.end()) continue;
      ServerConn& sc = it->second;
      if (!sc.replying) {
        ssize_t r = read(fd, buf.data(), buf.size());
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        if (r <= 0) {  // EOF or error before the whole request
          finish(fd, false);
          continue;
        }
        if (sc.got + size_t(r) > request.size() || memcmp(buf.data(), request.data() + sc.got, size_t(r)) != 0) {
          finish(fd, false);
          continue;
        }
        sc.got += size_t(r);
        if (sc.got < request.size()) continue;
        sc.replying = true;
      }
      ssize_t w = write(fd, reply.data() + sc.sent, reply.size() - sc.sent);
      if (w < 0 && (errno == EAGAIN || errno == EINTR)) w = 0;
      if (w < 0) {
        finish(fd, false);
        continue;
      }
      sc.sent += size_t(w);
      if (sc.sent == reply.size()) {
        finish(fd, true);  // the whole request was read: close() sends a FIN, not a reset
      } else {
        epoll_event oev{};
        oev.events = EPOLLOUT;
        oev.data.fd = fd;
        epoll_ctl(ep, EPOLL_CTL_MOD, fd, &oev);
      }
    }
  }
  printf("{\"served\":%llu,\"bad\":%llu}\n", (unsigned long long)served, (unsigned long long)bad);
  return 0;
}

// ---- client ---------------------------------------------------------------------------------------------

enum class State { Idle, Connecting, Reading };

struct ClientConn {
  int fd = -1;
  State state = State::Idle;
  size_t sent = 0;
  size_t got = 0;
  uint64_t started = 0;
  uint64_t written = 0;  // the request's last byte written
  uint64_t first = 0;    // the reply's first byte read
  char prefix[16] = {};  // --http: the reply's first bytes
};

struct ClientOptions {
  int port = 0;
  int concurrency = 0;
  double duration = 0;
  long count = 0;
  int sources = 1;
  int timeout_ms = 5000;
  double rate = 0;    // > 0: open loop, connections started per second
  bool http = false;  // the reply is an HTTP/1.1 200 answer of any length
};

constexpr char kHttpOk[] = "HTTP/1.1 200 ";
constexpr uint64_t kNoSlot = UINT64_MAX;

int run_client(const ClientOptions& o, const std::vector<char>& request, const std::vector<char>& reply) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  std::vector<ClientConn> slots(size_t(o.concurrency));
  std::map<std::string, uint64_t> errors;
  std::vector<uint32_t> latencies;  // µs, capped
  std::vector<uint32_t> firsts;     // µs from the request written to the first reply byte
  latencies.reserve(1 << 20);
  firsts.reserve(1 << 20);
  const bool open_loop = o.rate > 0;
  const uint64_t gap_ns = open_loop ? uint64_t(1e9 / o.rate) : 0;
  std::vector<size_t> free_slots;  // open loop: slots with no connection
  int tfd = -1;
  uint64_t completed = 0, started_total = 0, next_source = 0;
  std::vector<char> buf(kMaxReply + 1);
  const uint64_t t0 = now_ns();
  const uint64_t deadline = o.duration > 0 ? t0 + uint64_t(o.duration * 1e9) : UINT64_MAX;
  const uint64_t timeout_ns = uint64_t(o.timeout_ms) * 1000000ull;
  int one = 1;

  auto more = [&]() { return !g_stop && now_ns() < deadline && (o.count == 0 || long(started_total) < o.count); };
  auto fail = [&](ClientConn& c, const char* why) {
    errors[why]++;
    if (c.fd >= 0) {
      epoll_ctl(ep, EPOLL_CTL_DEL, c.fd, nullptr);
      close(c.fd);
    }
    c = ClientConn{};
  };
  auto start = [&](size_t i, uint64_t at) {
    ClientConn& c = slots[i];
    c = ClientConn{};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      errors[strerror(errno)]++;
      return;
    }
    // many source addresses, ports picked per destination at connect(): TIME_WAIT and port reuse spread out
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_in src{};
    src.sin_family = AF_INET;
    src.sin_addr.s_addr = htonl(INADDR_LOOPBACK + uint32_t(next_source++ % uint64_t(o.sources)));
    sockaddr_in dst{};
    dst.sin_family = AF_INET;
    dst.sin_port = htons(uint16_t(o.port));
    dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c.fd = fd;
    c.started = at;
    started_total++;
    if (bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof src) != 0) return fail(c, "bind");
    if (connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof dst) != 0 && errno != EINPROGRESS) return fail(c, strerror(errno));
    c.state = State::Connecting;
    epoll_event ev{};
    ev.events = EPOLLOUT;
    ev.data.u64 = i;
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  };
  // what a slot does once its connection is done: the next one at once (closed loop) or wait for the schedule
  auto next = [&](size_t i) {
    if (open_loop) free_slots.push_back(i);
    else if (more()) start(i, now_ns());
  };
  uint64_t next_due = t0;
  if (open_loop) {
    for (size_t i = slots.size(); i > 0; i--) free_slots.push_back(i - 1);
    tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (tfd < 0) die("timerfd_create");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kNoSlot;
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
  }
  // open loop: every start now due, then the timer set for the next one
  auto schedule = [&]() {
    uint64_t now = now_ns();
    while (more() && next_due <= now) {
      if (free_slots.empty()) {
        errors["no free slot"]++;
        started_total++;
      } else {
        size_t i = free_slots.back();
        free_slots.pop_back();
        start(i, next_due);
        if (slots[i].state == State::Idle) free_slots.push_back(i);  // failed at once
      }
      next_due += gap_ns;
    }
    itimerspec its{};
    its.it_value.tv_sec = time_t(next_due / 1000000000ull);
    its.it_value.tv_nsec = long(next_due % 1000000000ull);
    timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, nullptr);
  };
  size_t active = 0;
  if (open_loop) schedule();
  else for (size_t i = 0; i < slots.size() && more(); i++) start(i, now_ns());
  epoll_event events[kMaxEvents];
  uint64_t last_sweep = now_ns();
  for (;;) {
    active = 0;
    for (auto& c : slots) active += c.state != State::Idle;
    if (active == 0 && !more()) break;
    // in-flight connections get their own timeout after the deadline, then the run ends regardless
    if (now_ns() > (deadline == UINT64_MAX ? UINT64_MAX : deadline + timeout_ns)) {
      for (auto& c : slots) if (c.state != State::Idle) fail(c, "unfinished at the end");
      break;
    }
    int n = epoll_wait(ep, events, kMaxEvents, 100);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    if (open_loop) schedule();
    for (int k = 0; k < n; k++) {
      if (events[k].data.u64 == kNoSlot) {
        uint64_t ticks;
        while (read(tfd, &ticks, sizeof ticks) > 0) {}
        continue;
      }
      size_t i = size_t(events[k].data.u64);
      ClientConn& c = slots[i];
      if (c.state == State::Connecting) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
          errno = err;
          fail(c, strerror(err));
          next(i);
          continue;
        }
        ssize_t w = write(c.fd, request.data() + c.sent, request.size() - c.sent);
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
          fail(c, "write");
          next(i);
          continue;
        }
        if (w > 0) c.sent += size_t(w);
        if (c.sent < request.size()) continue;  // EPOLLOUT again
        c.written = now_ns();
        c.state = State::Reading;
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLRDHUP;
        ev.data.u64 = i;
        epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &ev);
        continue;
      }
      if (c.state != State::Reading) continue;
      ssize_t r = read(c.fd, buf.data(), buf.size());
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (r < 0) {
        fail(c, errno == ECONNRESET ? "reset" : "read");
        next(i);
        continue;
      }
      if (r > 0) {
        if (c.first == 0) c.first = now_ns();
        if (o.http) {
          for (size_t k = 0; c.got + k < sizeof kHttpOk - 1 && k < size_t(r); k++) c.prefix[c.got + k] = buf[k];
          if (c.got + size_t(r) > kMaxReply) {
            fail(c, "reply too long");
            next(i);
            continue;
          }
        } else if (c.got + size_t(r) > reply.size() || memcmp(buf.data(), reply.data() + c.got, size_t(r)) != 0) {
          fail(c, "wrong reply bytes");
          next(i);
          continue;
        }
        c.got += size_t(r);
        continue;
      }
      // EOF
      if (o.http ? c.got < sizeof kHttpOk - 1 || memcmp(c.prefix, kHttpOk, sizeof kHttpOk - 1) != 0 : c.got != reply.size()) {
        fail(c, o.http ? "not an HTTP/1.1 200" : "short reply");
      } else {
        uint64_t now = now_ns();
        uint64_t us = (now - c.started) / 1000;
        latencies.push_back(uint32_t(us > UINT32_MAX ? UINT32_MAX : us));
        firsts.push_back(uint32_t((c.first - c.written) / 1000));
        completed++;
        epoll_ctl(ep, EPOLL_CTL_DEL, c.fd, nullptr);
        close(c.fd);
        c = ClientConn{};
      }
      next(i);
    }
    uint64_t now = now_ns();
    if (now - last_sweep > 100000000ull) {
      last_sweep = now;
      for (size_t i = 0; i < slots.size(); i++) {
        if (slots[i].state != State::Idle && now - slots[i].started > timeout_ns) {
          fail(slots[i], "timeout");
          next(i);
        }
      }
    }
  }
  const double elapsed = double(now_ns() - t0) / 1e9;
  std::vector<uint32_t> sorted = latencies;
  auto pct = [&](double p) -> unsigned {
    if (sorted.empty()) return 0;
    size_t idx = size_t(p * double(sorted.size() - 1));
    std::nth_element(sorted.begin(), sorted.begin() + long(idx), sorted.end());
    return sorted[idx];
  };
  unsigned p50 = pct(0.5), p90 = pct(0.9), p99 = pct(0.99), pmax = pct(1.0);
  sorted = firsts;
  unsigned first50 = pct(0.5), first90 = pct(0.9);
  double sum = 0;
  for (uint32_t v : latencies) sum += v;
  const double mean = latencies.empty() ? 0 : sum / double(latencies.size());
  // its own CPU, so the harness need not read /proc of a process that has exited
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  const long long user_us = (long long)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec;
  const long long sys_us = (long long)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec;
  printf("{\"completed\":%llu,\"elapsedS\":%.6f,\"p50Us\":%u,\"p90Us\":%u,\"p99Us\":%u,\"maxUs\":%u,\"meanUs\":%.1f,\"firstP50Us\":%u,\"firstP90Us\":%u,\"cpuUs\":%lld,\"sysUs\":%lld,\"errors\":{",
         (unsigned long long)completed, elapsed, p50, p90, p99, pmax, mean, first50, first90, user_us + sys_us, sys_us);
  bool first = true;
  for (auto& [why, count] : errors) {
    printf("%s\"%s\":%llu", first ? "" : ",", why.c_str(), (unsigned long long)count);
    first = false;
  }
  printf("}}\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) usage("mode missing");
  std::string mode = argv[1];
  const char* request_file = nullptr;
  long reply_bytes = -1;
  ClientOptions o;
  for (int i = 2; i < argc; i++) {
    std::string a = argv[i];
    if (i + 1 >= argc) usage(("missing value for " + a).c_str());
    const char* v = argv[++i];
    if (a == "--request") request_file = v;
    else if (a == "--reply-bytes") reply_bytes = arg_long(v, 1, long(kMaxReply), "--reply-bytes");
    else if (a == "--port") o.port = int(arg_long(v, 0, 65535, "--port"));
    else if (a == "--concurrency") o.concurrency = int(arg_long(v, 1, kMaxConcurrency, "--concurrency"));
    else if (a == "--duration") o.duration = double(arg_long(v, 1, 3600, "--duration"));
    else if (a == "--count") o.count = arg_long(v, 1, 100000000, "--count");
    else if (a == "--sources") o.sources = int(arg_long(v, 1, 250, "--sources"));
    else if (a == "--timeout-ms") o.timeout_ms = int(arg_long(v, 1, 600000, "--timeout-ms"));
    else if (a == "--rate") o.rate = double(arg_long(v, 1, 1000000, "--rate"));
    else if (a == "--http") o.http = std::string(v) == "1";
    else usage(("unknown option " + a).c_str());
  }
  if (request_file == nullptr || (reply_bytes < 0 && !(mode == "client" && o.http))) usage("--request and --reply-bytes (or, client, --http 1) are required");
  if (reply_bytes < 0) reply_bytes = 1;
  signal(SIGPIPE, SIG_IGN);
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);
  std::vector<char> request = read_file(request_file);
  std::vector<char> reply = pattern(size_t(reply_bytes));
  if (mode == "server") return run_server(o.port, request, reply);
  if (mode != "client") usage("mode must be server or client");
  if (o.port == 0 || o.concurrency == 0 || (o.duration == 0) == (o.count == 0)) usage("client needs --port, --concurrency and one of --duration, --count");
  return run_client(o, request, reply);
}
