// The C++ route table on its own (src/native/route-table.cc MatchRoute), without N-API: ns per request for the cases
// of bench/micro/route-table.bench.ts, whose JS figures are the baseline (run both in one sitting). Reads the tables
// that bench writes (build/bench/route-table.bin and route-table-php.bin: the bytes src/route/native-routes.ts makes
// from its Routers) and checks each case's route before timing. Not a test.
// Build and run (from the repository, after the micro bench; an argument names another folder of tables):
//   mkdir -p build/bench && g++ -O2 -std=c++17 -Isrc/native -o build/bench/route-table-bench
//     bench/native/route-table-bench.cc src/native/route-table.cc && build/bench/route-table-bench
// (one line)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "route-table.h"

using portico::rq::MatchRoute;
using portico::rq::RouteMatch;
using portico::rq::RouteTable;
using portico::rq::RouteVerdict;

namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

const uint8_t* U(const char* s) {
  return reinterpret_cast<const uint8_t*>(s);
}

// The table the micro bench wrote to `file`, or false
bool Load(const char* file, RouteTable* table) {
  std::ifstream in(file, std::ios::binary);
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string error;
  if (!bytes.empty() && portico::rq::ParseRouteTable(bytes.data(), bytes.size(), table, &error)) return true;
  std::fprintf(stderr, "no table in %s (run bench/micro/route-table.bench.ts first): %s\n", file, error.c_str());
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : "build/bench";
  RouteTable tables[2];
  if (!Load((dir + "/route-table.bin").c_str(), &tables[0]) || !Load((dir + "/route-table-php.bin").c_str(), &tables[1])) return 1;
  const struct {
    const char* name;
    const char* host;
    const char* path;
    uint32_t route;
    int table;  // 0: the site, 1: PHP
  } cases[] = {
      {"exact host, prefix", "www.example.com", "/Tomcat/app/index.html", 4, 0},
      {"exact host, 2nd prefix", "api.example.com", "/v2/users/42", 1, 0},
      {"wildcard", "x.cdn.example.com", "/img/a.png", 6, 0},
      {"fall-through", "127.0.0.1", "/", 17, 0},
      {"PHP: \\.php$", "localhost", "/index.php", 1, 1},
      {"PHP: past \\.php$ to /", "localhost", "/css/site.css", 2, 1},
  };
  std::printf("# route-table.cc MatchRoute without N-API; ns per request, median of 200 samples of 10000 requests\n");
  for (const auto& c : cases) {
    const RouteTable& table = tables[c.table];
    const size_t hn = std::strlen(c.host), pn = std::strlen(c.path);
    const RouteMatch m = MatchRoute(table, U(c.host), hn, U(c.path), pn, U("GET"), 3);
    if (m.verdict != RouteVerdict::kRoute || m.route != c.route) {
      std::fprintf(stderr, "precheck failed: %s\n", c.name);
      return 1;
    }
    std::vector<double> samples;
    size_t sink = 0;
    for (int s = 0; s < 220; s++) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int k = 0; k < 10000; k++) sink += MatchRoute(table, U(c.host), hn, U(c.path), pn, U("GET"), 3).route;
      const auto t1 = std::chrono::steady_clock::now();
      if (s >= 20) samples.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count() / 10000);
    }
    std::printf("%-24s MatchRoute %6.1f ns  (%zu)\n", c.name, Median(samples), sink % 7);
  }
  return 0;
}
