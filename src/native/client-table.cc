// limits.connections_per_ip's tables (client-table.h) and their N-API entries: clientTable() makes one (a worker's
// LimitStore makes one for its life; l4Compile names it), clientAcquire/Release/Count/Size count in it from
// JavaScript, l4ClientKey gives client-key.h's key for the fuzz test that holds it to clientKey.
#include "client-table.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>

#include <cstdlib>
#include <vector>

#include "client-key.h"
#include "napi-args.h"

namespace portico::clients {

bool Table::Acquire(const std::string& key, uint32_t max) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = open_.find(key);
  if (it == open_.end()) {
    if (max == 0) return false;
    open_.emplace(key, 1);
    return true;
  }
  if (it->second >= max) return false;
  it->second++;
  return true;
}

void Table::Release(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = open_.find(key);
  if (it == open_.end()) return;
  if (it->second <= 1) open_.erase(it);
  else it->second--;
}

uint32_t Table::Count(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = open_.find(key);
  return it == open_.end() ? 0 : it->second;
}

size_t Table::Size() {
  std::lock_guard<std::mutex> lock(mu_);
  return open_.size();
}

namespace {

// Tables by id (index + 1); never removed (a worker makes one; a test process a few): no id is ever reused.
std::mutex tables_mu;
std::vector<std::shared_ptr<Table>>& tables = *new std::vector<std::shared_ptr<Table>>();

Table& TableArg(const Napi::CallbackInfo& info) {
  // tables are never removed: the reference outlives the lock
  std::lock_guard<std::mutex> lock(tables_mu);
  uint32_t id = U32(info[0], "table id");
  if (id == 0 || id > tables.size()) throw Napi::RangeError::New(info.Env(), "no such client table");
  return *tables[id - 1];
}

std::string KeyArg(const Napi::CallbackInfo& info) {
  if (info.Length() < 2 || !info[1].IsString()) throw Napi::TypeError::New(info.Env(), "key must be a string");
  return info[1].As<Napi::String>().Utf8Value();
}

// clientTable() -> id: a new empty table.
Napi::Value New(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(tables_mu);
  tables.push_back(std::make_shared<Table>());
  return Napi::Number::New(info.Env(), static_cast<double>(tables.size()));
}

// clientAcquire(table, key, max) -> boolean
Napi::Value Acquire(const Napi::CallbackInfo& info) {
  Table& t = TableArg(info);
  const std::string key = KeyArg(info);
  return Napi::Boolean::New(info.Env(), t.Acquire(key, U32(info[2], "max")));
}

// clientRelease(table, key)
Napi::Value Release(const Napi::CallbackInfo& info) {
  Table& t = TableArg(info);
  t.Release(KeyArg(info));
  return info.Env().Undefined();
}

// clientCount(table, key) -> number
Napi::Value Count(const Napi::CallbackInfo& info) {
  Table& t = TableArg(info);
  return Napi::Number::New(info.Env(), t.Count(KeyArg(info)));
}

// clientSize(table) -> number
Napi::Value Size(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(TableArg(info).Size()));
}

// l4ClientKey(address, prefix, proxied?) -> string | null: the key l4.cc gives a client at `address` (an IP literal;
// an IPv6 one may carry a zone, "fe80::1%eth0" or "%3"), as a socket's peer (its sockaddr, written back as Node
// writes it), or with `proxied` as a PROXY header's source (tcp4 for an IPv4 literal, else tcp6; no zone); null when
// the address does not parse.
Napi::Value Key(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString()) throw Napi::TypeError::New(env, "l4ClientKey(address, prefix, proxied?)");
  const std::string address = info[0].As<Napi::String>().Utf8Value();
  const uint32_t prefix = U32(info[1], "prefix");
  const bool proxied = info.Length() > 2 && info[2].ToBoolean().Value();
  sockaddr_storage ss{};
  if (!SockaddrOfLiteral(address, &ss, !proxied)) return env.Null();
  if (!proxied) return Napi::String::New(env, SocketClientKey(ss, prefix));
  uint16_t w[8];
  uint16_t port = 0;
  AddressWords(ss, w, &port);
  return Napi::String::New(env, ProxiedClientKey(ss.ss_family == AF_INET ? pp::Family::kTcp4 : pp::Family::kTcp6, w, prefix));
}

}  // namespace

std::shared_ptr<Table> Find(uint32_t id) {
  std::lock_guard<std::mutex> lock(tables_mu);
  if (id == 0 || id > tables.size()) return nullptr;
  return tables[id - 1];
}

void Register(Napi::Env env, Napi::Object exports) {
  exports.Set("clientTable", Napi::Function::New(env, New, "clientTable"));
  exports.Set("clientAcquire", Napi::Function::New(env, Acquire, "clientAcquire"));
  exports.Set("clientRelease", Napi::Function::New(env, Release, "clientRelease"));
  exports.Set("clientCount", Napi::Function::New(env, Count, "clientCount"));
  exports.Set("clientSize", Napi::Function::New(env, Size, "clientSize"));
  exports.Set("l4ClientKey", Napi::Function::New(env, Key, "l4ClientKey"));
}

}  // namespace portico::clients
