// A thread of the addon that sleeps in an epoll set of its own and is woken through an eventfd registered in it:
// the splice relay (relay.cc), the TLS relay (tls-relay.cc) and the L4 loop (l4.cc). Their start (every failure
// said, nothing left open), their wake-up and their end are the same; what each loop does is its own. No N-API.
#ifndef PORTICO_NATIVE_LOOP_THREAD_H_
#define PORTICO_NATIVE_LOOP_THREAD_H_

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <thread>

namespace portico {

// close() is never retried: on Linux the fd is released even when it reports EINTR.
inline void CloseFd(int& fd) {
  if (fd >= 0) close(fd);
  fd = -1;
}

struct LoopThread {
  int epfd = -1;
  int wakefd = -1;  // readable in epfd with `wake_data` (Start) as its event's data
  std::thread thread;

  // Makes the epoll set and the wake-up eventfd, then runs `loop` on a new thread. False, with `*error` naming
  // `what` and the step that failed, and no fd left open, when any step fails (thread creation included: a
  // process at its thread limit gets an error, not std::terminate).
  bool Start(void (*loop)(), epoll_data_t wake_data, const char* what, std::string* error) {
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
      *error = std::string(what) + ": epoll_create1: " + strerror(errno);
      return false;
    }
    wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wakefd < 0) {
      *error = std::string(what) + ": eventfd: " + strerror(errno);
      CloseFd(epfd);
      return false;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data = wake_data;
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, wakefd, &ev) != 0) {
      *error = std::string(what) + ": epoll_ctl(eventfd): " + strerror(errno);
      CloseFd(wakefd);
      CloseFd(epfd);
      return false;
    }
    try {
      thread = std::thread(loop);
    } catch (const std::exception& e) {
      *error = std::string("cannot start the ") + what + " thread: " + e.what();
      CloseFd(wakefd);
      CloseFd(epfd);
      return false;
    }
    return true;
  }

  // Wakes the loop from any thread (a no-op before Start or after Join).
  void Wake() const {
    if (wakefd < 0) return;
    uint64_t one = 1;
    while (write(wakefd, &one, sizeof one) < 0 && errno == EINTR) {
    }
  }

  // On the loop's thread, when the wake-up fd fired: resets its count so that it sleeps again.
  void TakeWake() const {
    uint64_t ignored;
    while (read(wakefd, &ignored, sizeof ignored) < 0 && errno == EINTR) {
    }
  }

  // After the loop was told to return (and woken): waits for it, then closes both fds.
  void Join() {
    if (thread.joinable()) thread.join();
    CloseFd(wakefd);
    CloseFd(epfd);
  }
};

// A relay's registration in its loop's epoll set (relay.cc, tls-relay.cc). Start() adds the relay's two fds while
// holding the engine's mutex; an event of the first can reach the loop's thread before the second is in, and its
// turn can end the relay (close both fds, free what it holds) under Start()'s feet. The loop's thread therefore
// waits for the registration to end (AwaitRegistered) before it acts on a relay still kRegistering.
constexpr uint8_t kRegistering = 0;
constexpr uint8_t kRegistered = 1;
constexpr uint8_t kGivenUp = 2;  // an EPOLL_CTL_ADD failed: the relay is closed, the loop's thread frees it
// Pause-loop rounds spent on a registration in progress (one epoll_ctl, microseconds) before sleeping on the mutex
// Start() holds: a futex sleep and wake-up would cost more than the wait.
constexpr int kRegistrationSpins = 4096;

// Returns once `registration` is no longer kRegistering (at once, the usual case): spins, then takes `mu` (held by
// Start() until it ended).
inline void AwaitRegistered(const std::atomic<uint8_t>& registration, std::mutex& mu) {
  for (int i = 0; i < kRegistrationSpins; i++) {
    if (registration.load(std::memory_order_acquire) != kRegistering) return;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
  std::lock_guard<std::mutex> lock(mu);
}

}  // namespace portico

#endif  // PORTICO_NATIVE_LOOP_THREAD_H_
