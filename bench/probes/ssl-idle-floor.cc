// What OpenSSL itself keeps per idle server-side TLS connection, with nothing of Portico around it: N TLS 1.3
// handshakes over socketpairs in one process (the server SSLs set up as src/native/tls.cc sets them:
// SSL_MODE_RELEASE_BUFFERS), one message each way, the last server read left waiting (as a relay leaves it);
// then the clients are freed and malloc's bytes in use are read. A second pass calls SSL_free_buffers on each
// server SSL as well, which frees nothing more when RELEASE_BUFFERS already released the record buffers.
// Build and run (the system's OpenSSL 3.0, like the one Node ships):
//   g++ -O2 -o /tmp/ssl-idle-floor bench/probes/ssl-idle-floor.cc -lssl -lcrypto
//   /tmp/ssl-idle-floor 1000 test/fixtures/tls/localhost.crt test/fixtures/tls/localhost.key
// heaptrack /tmp/ssl-idle-floor ... then heaptrack_print --print-leaks 1 names the allocations that stay.
#include <malloc.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

SSL* Make(SSL_CTX* ctx, int fd, bool server) {
  SSL* s = SSL_new(ctx);
  SSL_set_fd(s, fd);
  if (server) SSL_set_accept_state(s);
  else SSL_set_connect_state(s);
  return s;
}

// Handshake both ends in turn, one message each way, then a server read that finds nothing (WANT_READ).
bool Exchange(SSL* server, SSL* client) {
  bool done = false;
  for (int i = 0; i < 50 && !done; i++) done = (SSL_do_handshake(server) == 1) & (SSL_do_handshake(client) == 1);
  if (!done) return false;
  char buf[64];
  SSL_write(client, "hello", 5);
  int got = 0;
  for (int i = 0; i < 10 && got <= 0; i++) got = SSL_read(server, buf, sizeof buf);
  SSL_write(server, "world", 5);
  got = 0;
  for (int i = 0; i < 10 && got <= 0; i++) got = SSL_read(client, buf, sizeof buf);
  return SSL_read(server, buf, sizeof buf) <= 0 && SSL_get_error(server, -1) == SSL_ERROR_WANT_READ;
}

double Run(SSL_CTX* sctx, SSL_CTX* cctx, int n, bool free_buffers) {
  std::vector<SSL*> servers, clients;
  std::vector<int> fds;
  malloc_trim(0);
  size_t before = mallinfo2().uordblks;
  for (int k = 0; k < n; k++) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0) return -1;
    SSL* s = Make(sctx, sv[0], true);
    SSL* c = Make(cctx, sv[1], false);
    if (!Exchange(s, c)) return -1;
    if (free_buffers) SSL_free_buffers(s);
    servers.push_back(s);
    clients.push_back(c);
    fds.push_back(sv[0]);
    fds.push_back(sv[1]);
  }
  for (SSL* c : clients) SSL_free(c);
  double per = static_cast<double>(mallinfo2().uordblks - before) / 1024.0 / n;
  for (SSL* s : servers) SSL_free(s);
  for (int fd : fds) close(fd);
  return per;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s N CERT KEY\n", argv[0]);
    return 2;
  }
  int n = atoi(argv[1]);
  if (n < 1 || n > 100000) return 2;
  SSL_CTX* sctx = SSL_CTX_new(TLS_server_method());
  SSL_CTX_set_mode(sctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (SSL_CTX_use_certificate_chain_file(sctx, argv[2]) != 1 || SSL_CTX_use_PrivateKey_file(sctx, argv[3], SSL_FILETYPE_PEM) != 1) {
    fprintf(stderr, "cannot load %s / %s\n", argv[2], argv[3]);
    return 1;
  }
  SSL_CTX* cctx = SSL_CTX_new(TLS_client_method());
  Run(sctx, cctx, 10, false);  // warm-up: contexts, provider caches, the allocator's first arenas
  double kept = Run(sctx, cctx, n, false);
  double freed = Run(sctx, cctx, n, true);
  printf("%s, %d idle server connections (TLS 1.3, RELEASE_BUFFERS): %.1f KiB in use each; with SSL_free_buffers too: %.1f KiB\n",
         OpenSSL_version(OPENSSL_VERSION), n, kept, freed);
  return kept < 0 || freed < 0 ? 1 : 0;
}
