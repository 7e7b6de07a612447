// FastCGI's request records for a bodyless request, written in C++ (fcgi-request.cc): what src/handlers/fastcgi.ts
// sends FPM for a GET or HEAD that request-head.h Scan takes, byte for byte as src/wire/fastcgi.ts
// encodeRequestStart(requestId, keepConn, fixedParams(f), requestParams(...), true) writes them
// (src/handlers/fastcgi-params.ts): BEGIN_REQUEST, the PARAMS records (split past 64 KiB), the empty PARAMS and the
// empty STDIN. Not wired into the request path: io.cc only exports it for the differential tests
// (fcgiRequestRecords); native-notes/request.md "FastCGI's request records in C++" says what step 4 needs of it.
// Its inputs come in three lifetimes, so that the per-request call reads bytes and nothing else:
// - per route, a Plan (MakePlan, once per CompiledFastcgi): the fixed pairs' bytes, the names the route's params
//   override, and whether it has params rendered per request (then every request of the route is JS's);
// - per script, the script's pairs (SCRIPT_FILENAME, SCRIPT_NAME, PATH_INFO, DOCUMENT_URI) as JS caches them per
//   Script object (fastcgi-params.ts scriptParams): bytes given to each call;
// - per connection, a Conn (MakeConn, once per accepted connection): the addresses and ports as text, the scheme,
//   and whether the peer is a trusted proxy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "request-head.h"

namespace portico::fq {

// The standard pairs fastcgi-params.ts requestParams writes, in its order: a bit each, set in Plan::over when a
// route param of that name replaces it.
constexpr uint32_t kQueryString = 1u << 0;
constexpr uint32_t kRequestMethod = 1u << 1;
constexpr uint32_t kContentType = 1u << 2;
constexpr uint32_t kContentLength = 1u << 3;
constexpr uint32_t kRequestUri = 1u << 4;
constexpr uint32_t kServerProtocol = 1u << 5;
constexpr uint32_t kRequestScheme = 1u << 6;
constexpr uint32_t kRemoteAddr = 1u << 7;
constexpr uint32_t kRemotePort = 1u << 8;
constexpr uint32_t kServerAddr = 1u << 9;
constexpr uint32_t kServerPort = 1u << 10;
constexpr uint32_t kServerName = 1u << 11;
constexpr uint32_t kHttps = 1u << 12;

// A route's params, as far as they are known before a request (fastcgi-params.ts planOf).
struct Plan {
  std::string fixed;                   // fixedParams(f): encoded pairs, the PARAMS content every request starts with
  uint32_t over = 0;                   // the standard pairs a route param replaces (k* bits)
  std::vector<std::string> http_over;  // route param names of the HTTP_* form: a header of that CGI name is not sent
  bool per_request = false;            // params rendered from per-request variables: not this path's
};

// The plan from what JS computed once per route: the fixed bytes, every route param's name (config order), and
// whether any param uses a per-request variable.
Plan MakePlan(std::string fixed, const std::vector<std::string>& overridden, bool per_request);

// A connection's ends as the params write them (connection.ts remoteAddr, fastcgi.ts remotePort and serverAddr).
struct Conn {
  std::string remote_addr;  // REMOTE_ADDR: the peer as Node writes it, IPv4-mapped as IPv4 (rq::AddressText)
  std::string remote_port;  // REMOTE_PORT
  std::string server_addr;  // SERVER_ADDR: the address the client reached, likewise
  std::string server_port;  // SERVER_PORT: the listener's port (not the socket's)
  bool https = false;       // REQUEST_SCHEME, HTTPS
  bool trusted_peer = false;  // forwarding.trusted_proxies has the peer: its forwarding fields are passed on
};

// The Conn of a peer at `remote` (its port `remote_port`) that reached `local` on a listener of port
// `server_port`. False: an address this path does not write (no family, or link-local: Node adds its zone).
bool MakeConn(const rq::Client& remote, int remote_port, const rq::Client& local, int server_port, bool https, bool trusted_peer, Conn* out);

// Scan (forwarding fields read as fields), then the records, into `out` (replaced). False: not this path's
// (nothing in `h` or `out` is meaningful then): a head Scan refuses, a route with per-request params, or a trusted
// peer's X-Forwarded-For (REMOTE_ADDR would be realClient's walk over it, with the trust policy's CIDRs: JS's).
bool Records(const uint8_t* p, size_t len, const rq::Limits& limits, const Plan& plan, const Conn& conn, const char* script, size_t script_len, uint16_t request_id, bool keep_conn,
             rq::Head* h, std::string* out);

}  // namespace portico::fq
