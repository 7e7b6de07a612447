// The C++ request-head path on its own (src/native/request-head.cc: Scan, then Rewrite), without N-API: ns per head
// for the heads of bench/micro/request-head.bench.ts, whose JS figures are the baseline (run both in one sitting).
// Checks each result against the bytes buildRequestHead writes for it before timing. Not a test.
// Build and run (from the repository):
//   mkdir -p build/bench && g++ -O2 -std=c++17 -Isrc/native -o build/bench/request-head-bench
//     bench/native/request-head-bench.cc src/native/request-head.cc && build/bench/request-head-bench
// (one line)
#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "request-head.h"

using portico::rq::Client;
using portico::rq::Head;
using portico::rq::Limits;
using portico::rq::Plan;

namespace {

const std::string kBrowser =
    "GET /Tomcat/app/index.html?lang=en&v=3 HTTP/1.1\r\nHost: www.example.com\r\nConnection: keep-alive\r\nUpgrade-Insecure-Requests: 1\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36\r\n"
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\nAccept-Encoding: gzip, deflate, br, zstd\r\n"
    "Accept-Language: en-US,en;q=0.9\r\nCookie: session=3f1c2a9b7d; theme=dark\r\n\r\n";
const std::string kSmall = "GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";

// what buildRequestHead writes for them (plain route, client 127.0.0.1, http, listener port 8080)
const std::string kForwarding = "X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n";
const std::string kBrowserOut =
    "GET /Tomcat/app/index.html?lang=en&v=3 HTTP/1.1\r\nHost: www.example.com\r\nUpgrade-Insecure-Requests: 1\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36\r\n"
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\nAccept-Encoding: gzip, deflate, br, zstd\r\n"
    "Accept-Language: en-US,en;q=0.9\r\nCookie: session=3f1c2a9b7d; theme=dark\r\n" +
    kForwarding + "X-Forwarded-Host: www.example.com\r\nX-Forwarded-Port: 8080\r\nX-Real-IP: 127.0.0.1\r\n\r\n";
const std::string kSmallOut = "GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n" + kForwarding + "X-Forwarded-Host: 127.0.0.1:8080\r\nX-Forwarded-Port: 8080\r\nX-Real-IP: 127.0.0.1\r\n\r\n";

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main() {
  Plan plan;
  plan.skip = {"connection", "keep-alive", "proxy-connection", "te", "upgrade", "http2-settings", "content-length", "transfer-encoding"};
  Client client;
  client.family = AF_INET;
  inet_pton(AF_INET, "127.0.0.1", client.addr);
  client.server_port = 8080;
  Limits limits;
  Head head;
  std::string out;
  const struct {
    const char* name;
    const std::string& in;
    const std::string& expect;
  } cases[] = {{"browser GET", kBrowser, kBrowserOut}, {"small GET", kSmall, kSmallOut}};
  std::printf("# request-head.cc Scan + Rewrite without N-API; ns per head, median of 200 samples of 1000 heads\n");
  for (const auto& c : cases) {
    const auto* p = reinterpret_cast<const uint8_t*>(c.in.data());
    if (!portico::rq::Rewrite(p, c.in.size(), limits, plan, client, &head, &out) || out != c.expect) {
      std::fprintf(stderr, "precheck failed: %s\n%s", c.name, out.c_str());
      return 1;
    }
    std::vector<double> samples;
    size_t sink = 0;
    for (int s = 0; s < 220; s++) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int k = 0; k < 1000; k++) {
        portico::rq::Rewrite(p, c.in.size(), limits, plan, client, &head, &out);
        sink += out.size();
      }
      const auto t1 = std::chrono::steady_clock::now();
      if (s >= 20) samples.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count() / 1000);
    }
    std::printf("%-12s %4zu B  Scan+Rewrite %6.0f ns  (%zu)\n", c.name, c.in.size(), Median(samples), sink % 7);
  }
  return 0;
}
