// Native TLS termination with the OpenSSL that Node exports to addons: per-listener contexts (one SSL_CTX per
// certificate, SNI selection by the same rules as src/accept/tls.ts), ALPN http/1.1, session tickets from a key
// ring shared by all workers, and one Session per server-side connection over a non-blocking socket fd.
// It owns no socket and no event loop: io.cc drives sessions on the JS thread, tls-relay.cc on the relay thread.
#pragma once

#include <memory>
#include <string>

#include <napi.h>

typedef struct ssl_st SSL;

namespace portico::tls {

struct Server;

// What one non-blocking TLS call came to.
enum class Io { kOk, kWantRead, kWantWrite, kEof, kError };

// One server-side TLS connection on a socket fd it does not own (the caller closes the fd after the session).
// Used by one thread at a time; moving it to another thread between calls is fine.
class Session {
 public:
  // Null with `error` set when the server is unknown or OpenSSL fails.
  static Session* New(int server_id, int fd, std::string* error);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  Io Handshake();
  // Plaintext into buf[0..len): kOk with *got > 0, kEof (close_notify or FIN), or wait/error.
  Io Read(char* buf, size_t len, size_t* got);
  // Encrypts and sends p[0..len): kOk with *wrote (records sent, maybe fewer than len), or wait/error. A retry
  // after kWantWrite must start with the same bytes (it may pass more, from a moved buffer).
  Io Write(const char* p, size_t len, size_t* wrote);
  // Sends close_notify (once); kWantWrite when the socket is full (call again on POLLOUT).
  Io Shutdown();
  // Bytes OpenSSL holds that no Read returned yet (plaintext, or records read ahead): they must be read before
  // waiting on the socket, which may have nothing more to say.
  bool Pending() const;
  // The last recv came back shorter than asked and OpenSSL holds nothing unread: another Read would only find the
  // socket empty (level-triggered epoll says when it is not). A hint: Read still works after it.
  bool Drained() const;
  int fd() const { return fd_; }
  bool recv_drained = false;  // set by the socket BIO (tls.cc) after each recv
  // Why the last call failed (OpenSSL's error text, or the errno's), for logs.
  const std::string& error() const { return error_; }
  int sys_errno() const { return sys_errno_; }
  SSL* ssl() const { return ssl_; }

 private:
  Session(std::shared_ptr<Server> server, SSL* ssl, int fd) : server_(std::move(server)), ssl_(ssl), fd_(fd) {}
  Io Fail(int ret);
  std::shared_ptr<Server> server_;  // keeps the contexts alive while the connection lives (reload swaps servers)
  SSL* ssl_;
  int fd_;
  std::string error_;
  int sys_errno_ = 0;
  bool shutdown_sent_ = false;
};

// { version, cipher, alpn, servername, resumed } of a handshaken session, for logs and tests.
Napi::Object Info(Napi::Env env, const Session& session);

// Empty when every OpenSSL function this addon calls resolves in the running process, else why not.
const std::string& Unavailable();

void Register(Napi::Env env, Napi::Object exports);

}  // namespace portico::tls
