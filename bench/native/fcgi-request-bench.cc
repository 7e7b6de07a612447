// The C++ FastCGI request records on their own (src/native/fcgi-request.cc: Scan, then the records), without N-API:
// ns per request for the heads of bench/micro/fcgi-request.bench.ts, whose JS figures are the baseline (run both in
// one sitting). That bench writes each case (head, fixed pairs, script pairs, and the records JS wrote) to
// build/bench/fcgi-request/; this one checks its output against those records before timing. The plan and the
// connection are made once, as the real path would per route and per connection. Not a test.
// Build and run (from the repository, after the JS bench):
//   mkdir -p build/bench && g++ -O2 -std=c++17 -Isrc/native -o build/bench/fcgi-request-bench
//     bench/native/fcgi-request-bench.cc src/native/fcgi-request.cc src/native/request-head.cc && build/bench/fcgi-request-bench
// (one line)
#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fcgi-request.h"

namespace {

std::string Read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main() {
  portico::rq::Client remote;
  remote.family = AF_INET;
  inet_pton(AF_INET, "127.0.0.1", remote.addr);
  portico::fq::Conn conn;
  if (!portico::fq::MakeConn(remote, 53122, remote, 8080, false, false, &conn)) return 1;
  portico::rq::Limits limits;
  portico::rq::Head head;
  std::string out;
  std::printf("# fcgi-request.cc Scan + records without N-API; ns per request, median of 200 samples of 1000 requests\n");
  for (const char* name : {"browser-GET", "small-GET"}) {
    const std::string base = std::string("build/bench/fcgi-request/") + name;
    const std::string in = Read(base + ".head");
    const std::string script = Read(base + ".script");
    const std::string expect = Read(base + ".records");
    if (in.empty() || expect.empty()) {
      std::fprintf(stderr, "no case %s: run bench/micro/fcgi-request.bench.ts first\n", base.c_str());
      return 1;
    }
    const portico::fq::Plan plan = portico::fq::MakePlan(Read(base + ".fixed"), {}, false);
    const auto* p = reinterpret_cast<const uint8_t*>(in.data());
    if (!portico::fq::Records(p, in.size(), limits, plan, conn, script.data(), script.size(), 1, true, &head, &out) || out != expect) {
      std::fprintf(stderr, "precheck failed: %s\n", name);
      return 1;
    }
    std::vector<double> samples;
    size_t sink = 0;
    for (int s = 0; s < 220; s++) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int k = 0; k < 1000; k++) {
        portico::fq::Records(p, in.size(), limits, plan, conn, script.data(), script.size(), 1, true, &head, &out);
        sink += out.size();
      }
      const auto t1 = std::chrono::steady_clock::now();
      if (s >= 20) samples.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count() / 1000);
    }
    std::printf("%-12s %4zu B -> %4zu B  Scan+Records %6.0f ns  (%zu)\n", name, in.size(), out.size(), Median(samples), sink % 7);
  }
  return 0;
}
