// What a relay thread's CPU per echoed message would be if it used io_uring instead of epoll + recv/send, on this
// machine, with nothing of Portico around it. Three processes on loopback: an echo backend, a relay (plain TCP,
// one thread, 2 sockets per client) and a client keeping N connections in ping-pong (one M-byte message in flight
// each). The relay runs either way:
//   epoll: edge-triggered epoll, one recv per readable socket (a short read means drained, as Portico's relays
//          infer), one send to the other leg: 4 system calls per echo plus epoll_wait, as Portico's relay makes.
//   uring: one recv armed per socket; its completion queues the send to the other leg, the send's completion
//          re-arms the recv; everything queued is submitted with the next wait (io_uring_submit_and_wait), so the
//          system calls per echo fall with the number of connections busy at once.
// The relay's CPU (utime + stime from /proc) over the timed window, divided by the echoes the client counted.
// Build and run (liburing-dev from Debian):
//   g++ -O2 -o /tmp/uring-relay bench/probes/uring-relay.cc -luring
//   /tmp/uring-relay run epoll 100 32 5 ; /tmp/uring-relay run uring 100 32 5     # mode, conns, bytes, seconds
//   /tmp/uring-relay syscall                                                       # CPU of one empty system call
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

[[noreturn]] void Die(const char* what) {
  std::perror(what);
  std::exit(1);
}

void Pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  sched_setaffinity(0, sizeof set, &set);
}

int Listen(int* port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(fd, 4096) != 0) Die("listen");
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return fd;
}

int Connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) Die("connect");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

void NonBlocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

int AcceptOne(int lfd) {
  int fd = accept(lfd, nullptr, nullptr);
  if (fd < 0) Die("accept");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

// Echo backend: epoll, level-triggered; accepts forever and echoes what it reads.
void Backend(int lfd) {
  int ep = epoll_create1(0);
  epoll_event ev{EPOLLIN, {.fd = lfd}};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  std::vector<epoll_event> evs(256);
  char buf[65536];
  for (;;) {
    int n = epoll_wait(ep, evs.data(), static_cast<int>(evs.size()), -1);
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == lfd) {
        int c = AcceptOne(lfd);
        epoll_event ce{EPOLLIN, {.fd = c}};
        epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
        continue;
      }
      ssize_t r = recv(fd, buf, sizeof buf, 0);
      if (r <= 0) {
        close(fd);
        continue;
      }
      if (send(fd, buf, r, 0) != r) Die("backend send");
    }
  }
}

struct Leg {
  int fd;
  int peer;          // index of the other leg
  char* buf;         // what this leg read, until sent to the peer
  unsigned len;
};
constexpr unsigned kBuf = 16384;

void RelayEpoll(int lfd, int backendPort, int conns) {
  std::vector<Leg> legs;
  legs.reserve(conns * 2);
  int ep = epoll_create1(0);
  for (int i = 0; i < conns; i++) {
    int c = AcceptOne(lfd);
    int b = Connect(backendPort);
    NonBlocking(c);
    NonBlocking(b);
    int ci = static_cast<int>(legs.size());
    legs.push_back({c, ci + 1, new char[kBuf], 0});
    legs.push_back({b, ci, new char[kBuf], 0});
    epoll_event e1{EPOLLIN | EPOLLET, {.u32 = static_cast<uint32_t>(ci)}};
    epoll_event e2{EPOLLIN | EPOLLET, {.u32 = static_cast<uint32_t>(ci + 1)}};
    epoll_ctl(ep, EPOLL_CTL_ADD, c, &e1);
    epoll_ctl(ep, EPOLL_CTL_ADD, b, &e2);
  }
  std::vector<epoll_event> evs(512);
  for (;;) {
    int n = epoll_wait(ep, evs.data(), static_cast<int>(evs.size()), -1);
    for (int i = 0; i < n; i++) {
      Leg& l = legs[evs[i].data.u32];
      for (;;) {
        ssize_t r = recv(l.fd, l.buf, kBuf, 0);
        if (r < 0 && errno == EAGAIN) break;
        if (r <= 0) std::exit(0);  // the client or backend went away: the run is over
        if (send(legs[l.peer].fd, l.buf, r, 0) != r) Die("relay send (probe expects room)");
        if (static_cast<unsigned>(r) < kBuf) break;  // short read: drained
      }
    }
  }
}

// user_data: leg index << 1 | (1 for a send, 0 for a recv).
void ArmRecv(io_uring* ring, std::vector<Leg>& legs, int i) {
  io_uring_sqe* sqe = io_uring_get_sqe(ring);
  if (sqe == nullptr) {
    io_uring_submit(ring);
    sqe = io_uring_get_sqe(ring);
  }
  io_uring_prep_recv(sqe, legs[i].fd, legs[i].buf, kBuf, 0);
  io_uring_sqe_set_data64(sqe, static_cast<uint64_t>(i) << 1);
}

void RelayUring(int lfd, int backendPort, int conns) {
  std::vector<Leg> legs;
  legs.reserve(conns * 2);
  io_uring ring;
  io_uring_params p{};
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  if (io_uring_queue_init_params(4096, &ring, &p) != 0) {
    p.flags = 0;  // older kernels
    if (io_uring_queue_init_params(4096, &ring, &p) != 0) Die("io_uring_queue_init");
  }
  for (int i = 0; i < conns; i++) {
    int c = AcceptOne(lfd);
    int b = Connect(backendPort);
    int ci = static_cast<int>(legs.size());
    legs.push_back({c, ci + 1, new char[kBuf], 0});
    legs.push_back({b, ci, new char[kBuf], 0});
  }
  for (int i = 0; i < static_cast<int>(legs.size()); i++) ArmRecv(&ring, legs, i);
  io_uring_cqe* cqes[512];
  for (;;) {
    io_uring_submit_and_wait(&ring, 1);
    unsigned n = io_uring_peek_batch_cqe(&ring, cqes, 512);
    for (unsigned k = 0; k < n; k++) {
      uint64_t d = io_uring_cqe_get_data64(cqes[k]);
      int res = cqes[k]->res;
      int i = static_cast<int>(d >> 1);
      Leg& l = legs[i];
      if ((d & 1) == 0) {  // recv done: send it to the peer from the same buffer
        if (res <= 0) std::exit(0);  // the client or backend went away: the run is over
        l.len = static_cast<unsigned>(res);
        io_uring_sqe* sqe = io_uring_get_sqe(&ring);
        if (sqe == nullptr) {
          io_uring_submit(&ring);
          sqe = io_uring_get_sqe(&ring);
        }
        io_uring_prep_send(sqe, legs[l.peer].fd, l.buf, l.len, 0);
        io_uring_sqe_set_data64(sqe, (static_cast<uint64_t>(i) << 1) | 1);
      } else {  // send done: the buffer is free, read again
        if (res != static_cast<int>(l.len)) Die("uring send (probe expects room)");
        ArmRecv(&ring, legs, i);
      }
    }
    io_uring_cq_advance(&ring, n);
  }
}

// Client: N connections, one message in flight each; counts echoes for `seconds` after a 1 s warm-up and prints
// them to `out` (a pipe to the driver).
void Client(int port, int conns, int bytes, double seconds, int out) {
  int ep = epoll_create1(0);
  std::vector<int> fds;
  std::vector<int> got(conns, 0);
  std::string msg(bytes, 'x');
  for (int i = 0; i < conns; i++) {
    int fd = Connect(port);
    NonBlocking(fd);
    fds.push_back(fd);
    epoll_event e{EPOLLIN, {.u32 = static_cast<uint32_t>(i)}};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
  }
  for (int fd : fds) send(fd, msg.data(), bytes, 0);
  std::vector<epoll_event> evs(512);
  char buf[65536];
  timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  long echoes = 0;
  bool timing = false;
  auto since = [&](const timespec& t) {
    timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - t.tv_sec) + (now.tv_nsec - t.tv_nsec) / 1e9;
  };
  for (;;) {
    double el = since(t0);
    if (!timing && el >= 1.0) {
      timing = true;
      echoes = 0;
      char c = 'S';
      if (write(out, &c, 1) != 1) Die("client start mark");
    }
    if (timing && el >= 1.0 + seconds) break;
    int n = epoll_wait(ep, evs.data(), static_cast<int>(evs.size()), 100);
    for (int i = 0; i < n; i++) {
      int c = static_cast<int>(evs[i].data.u32);
      ssize_t r = recv(fds[c], buf, sizeof buf, 0);
      if (r <= 0) Die("client recv");
      got[c] += static_cast<int>(r);
      while (got[c] >= bytes) {
        got[c] -= bytes;
        echoes++;
        send(fds[c], msg.data(), bytes, 0);
      }
    }
  }
  char c = 'E';
  if (write(out, &c, 1) != 1 || write(out, &echoes, sizeof echoes) != sizeof echoes) Die("client result");
}

long CpuTicks(pid_t pid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE* f = std::fopen(path, "r");
  if (f == nullptr) return -1;
  char line[1024];
  size_t n = std::fread(line, 1, sizeof line - 1, f);
  std::fclose(f);
  line[n] = 0;
  const char* p = std::strrchr(line, ')');
  long utime = 0, stime = 0;
  // Fields after the command: state(3) ... utime(14) stime(15).
  std::sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime);
  return utime + stime;
}

int Run(const char* mode, int conns, int bytes, double seconds) {
  int bport, rport;
  int blfd = Listen(&bport);
  int rlfd = Listen(&rport);
  pid_t backend = fork();
  if (backend == 0) {
    Pin(1);
    Backend(blfd);
  }
  pid_t relay = fork();
  if (relay == 0) {
    Pin(0);
    if (std::strcmp(mode, "uring") == 0) RelayUring(rlfd, bport, conns);
    else RelayEpoll(rlfd, bport, conns);
    std::exit(0);
  }
  int pipefd[2];
  if (pipe(pipefd) != 0) Die("pipe");
  pid_t client = fork();
  if (client == 0) {
    Pin(1);
    close(pipefd[0]);
    Client(rport, conns, bytes, seconds, pipefd[1]);
    std::exit(0);
  }
  close(pipefd[1]);
  char c;
  if (read(pipefd[0], &c, 1) != 1 || c != 'S') Die("start mark");
  long t0 = CpuTicks(relay);
  timespec w0;
  clock_gettime(CLOCK_MONOTONIC, &w0);
  long echoes = 0;
  if (read(pipefd[0], &c, 1) != 1 || c != 'E' || read(pipefd[0], &echoes, sizeof echoes) != sizeof echoes) Die("result");
  long t1 = CpuTicks(relay);
  timespec w1;
  clock_gettime(CLOCK_MONOTONIC, &w1);
  double wall = (w1.tv_sec - w0.tv_sec) + (w1.tv_nsec - w0.tv_nsec) / 1e9;
  double cpuUs = (t1 - t0) * 1e6 / sysconf(_SC_CLK_TCK);
  std::printf("%s conns=%d bytes=%d: %ld echoes in %.2f s = %.0f/s, relay %.1f%% of a core, %.2f CPU-us per echo\n", mode,
              conns, bytes, echoes, wall, echoes / wall, cpuUs / wall / 1e4, echoes > 0 ? cpuUs / echoes : 0.0);
  kill(relay, SIGKILL);
  kill(backend, SIGKILL);
  waitpid(client, nullptr, 0);
  waitpid(relay, nullptr, 0);
  waitpid(backend, nullptr, 0);
  return 0;
}

// CPU per system call that does nothing (getppid), for scale: what each call a relay saves is worth here.
int NullSyscall() {
  constexpr int kCalls = 1000000;
  long t0 = CpuTicks(getpid());
  for (int i = 0; i < kCalls; i++) syscall(SYS_getppid);
  long t1 = CpuTicks(getpid());
  std::printf("null system call: %.3f CPU-us each (%d calls)\n", (t1 - t0) * 1e6 / sysconf(_SC_CLK_TCK) / kCalls, kCalls);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "syscall") == 0) return NullSyscall();
  if (argc != 6 || std::strcmp(argv[1], "run") != 0 ||
      (std::strcmp(argv[2], "epoll") != 0 && std::strcmp(argv[2], "uring") != 0)) {
    std::fprintf(stderr, "usage: %s run epoll|uring CONNS BYTES SECONDS | %s syscall\n", argv[0], argv[0]);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  return Run(argv[2], std::atoi(argv[3]), std::atoi(argv[4]), std::atof(argv[5]));
}
