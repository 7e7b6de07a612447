// See exchange.h. The start of a native FastCGI exchange (Try) and the state it reads: the current config, the
// ready clients, the lent upstream connections. io.cc dispatches to it; nothing here writes to a socket.
#include "exchange.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>

#include <cstring>
#include <memory>
#include <unordered_map>
#include <vector>

#include "fcgi-request.h"
#include "request-head.h"
#include "route-handle.h"
#include "route-table.h"
#include "script-cache.h"

namespace portico::nx {
namespace {

// A route the addon may start: its params plan, the pool whose lent connections it takes, its head memo.
struct RoutePlan {
  bool set = false;
  fq::Plan plan;
  int32_t pool = -1;
  bool memo = false;  // the route's remembered CGI head (fastcgi.ts HeadMemo) for a chunked answer
  std::string cgi;
  std::string head;
  int32_t shape = 0;
  int32_t status = 0;
};

// One config's part (a reload makes a new one current; the old one's ready clients are JS's again).
struct Config {
  int32_t id = 0;
  rq::SharedRouteTable table;
  rq::Limits limits;
  std::vector<RoutePlan> routes;
  ScriptCache scripts;
};

// A client connection: ready (JS marked it idle between exchanges) for config `config`, and its ends as the
// params write them, made on its first Try (getpeername, getsockname) and kept while it is open.
struct ClientSlot {
  bool ready = false;
  int32_t config = 0;
  bool trusted = false;
  int32_t server_port = 0;
  int8_t conn_state = 0;  // 0 not made, 1 made, -1 cannot be written here (link-local, no address)
  fq::Conn conn;
};

// An upstream connection's lending: 1 lent (idle, in its pool's lists), 2 taken by a Try in the batch being built
// or dispatched (a STARTED event names it), 0 neither.
struct LentSlot {
  int8_t state = 0;
  int32_t pool = -1;
  int32_t target = -1;
};

// A pool's lent connections per target (the warmest last, taken first, as the pool's idle stack), and the target
// the next Try starts looking at: round robin over the targets that have a lent connection.
struct Pool {
  std::vector<std::vector<int32_t>> targets;
  size_t cursor = 0;
};

struct State {
  std::unique_ptr<Config> current;
  int32_t next_config = 1;
  std::vector<ClientSlot> clients;
  std::vector<LentSlot> lent;
  std::unordered_map<int32_t, Pool> pools;
  std::vector<int32_t> taken;  // taken in this batch (BatchDone clears their state)
  std::unique_ptr<rq::Head> head = std::make_unique<rq::Head>();
  double declined = 0;  // reads of ready clients that went to JS
};

State st;

double NowMs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<double>(ts.tv_sec) * 1000.0 + static_cast<double>(ts.tv_nsec) / 1e6;
}

ClientSlot* ClientOf(int32_t id) {
  return id >= 0 && static_cast<size_t>(id) < st.clients.size() ? &st.clients[id] : nullptr;
}

LentSlot* LentOf(int32_t id) {
  return id >= 0 && static_cast<size_t>(id) < st.lent.size() ? &st.lent[id] : nullptr;
}

// Removes `id` from its pool's list (it is lent).
void Unlist(const LentSlot& l, int32_t id) {
  auto it = st.pools.find(l.pool);
  if (it == st.pools.end() || l.target < 0 || static_cast<size_t>(l.target) >= it->second.targets.size()) return;
  std::vector<int32_t>& v = it->second.targets[l.target];
  for (size_t i = v.size(); i-- > 0;) {
    if (v[i] == id) {
      v.erase(v.begin() + static_cast<std::ptrdiff_t>(i));
      return;
    }
  }
}

bool ClientFromSockaddr(const sockaddr_storage& ss, rq::Client* c, int* port) {
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    c->family = AF_INET;
    std::memcpy(c->addr, &a->sin_addr, 4);
    *port = ntohs(a->sin_port);
    return true;
  }
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    c->family = AF_INET6;
    std::memcpy(c->addr, &a->sin6_addr, 16);
    c->scope_id = a->sin6_scope_id;
    *port = ntohs(a->sin6_port);
    return true;
  }
  return false;
}

// The client's ends as params (fq::Conn), once per connection.
bool MakeClientConn(ClientSlot& cs, int fd) {
  if (cs.conn_state != 0) return cs.conn_state > 0;
  cs.conn_state = -1;
  sockaddr_storage peer{}, local{};
  socklen_t pl = sizeof peer, ll = sizeof local;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &pl) != 0 || getsockname(fd, reinterpret_cast<sockaddr*>(&local), &ll) != 0) return false;
  rq::Client remote, here;
  int remote_port = 0, local_port = 0;
  if (!ClientFromSockaddr(peer, &remote, &remote_port) || !ClientFromSockaddr(local, &here, &local_port)) return false;
  if (!fq::MakeConn(remote, remote_port, here, cs.server_port, false, cs.trusted, &cs.conn)) return false;
  cs.conn_state = 1;
  return true;
}

}  // namespace

bool Ready(int32_t id) {
  const ClientSlot* cs = ClientOf(id);
  return cs != nullptr && cs->ready;
}

void Forget(int32_t id) {
  if (ClientSlot* cs = ClientOf(id)) *cs = ClientSlot();
  if (LentSlot* l = LentOf(id)) {
    if (l->state == 1) Unlist(*l, id);
    *l = LentSlot();
  }
}

void Unstarted() {
  st.declined++;
}

void Spoke(int32_t id) {
  LentSlot* l = LentOf(id);
  if (l == nullptr || l->state != 1) return;
  Unlist(*l, id);
  *l = LentSlot();
}

void BatchDone() {
  for (int32_t id : st.taken) {
    LentSlot* l = LentOf(id);
    if (l != nullptr && l->state == 2) *l = LentSlot();
  }
  st.taken.clear();
}

bool TryWith(int32_t id, int fd, const uint8_t* p, size_t len, bool (*usable)(void*, int32_t), void* arg, Start* out) {
  ClientSlot& cs = st.clients[id];
  cs.ready = false;  // any read ends it: JS marks the connection again once it is idle
  Config* cfg = st.current.get();
  if (cfg == nullptr || cs.config != cfg->id) return false;
  st.declined++;
  rq::Head& h = *st.head;
  h.Reset();
  // exactly one whole head of the subset, nothing after it (a body, a pipelined request: JS's)
  if (!rq::Scan(p, len, cfg->limits, &h, true) || h.used != len) return false;
  const char* method = h.head_method ? "HEAD" : "GET";
  const rq::RouteMatch m = rq::MatchRoute(*cfg->table, p + h.host_s, h.host_name_e - h.host_s, p + h.target_s, h.query_s - h.target_s,
                                          reinterpret_cast<const uint8_t*>(method), h.head_method ? 4 : 3);
  if (m.verdict != rq::RouteVerdict::kRoute || m.route >= cfg->routes.size()) return false;
  const RoutePlan& rp = cfg->routes[m.route];
  if (!rp.set) return false;
  const std::string* script = cfg->scripts.Find(m.route, p + h.target_s, h.query_s - h.target_s, NowMs());
  if (script == nullptr || !MakeClientConn(cs, fd)) return false;
  auto pit = st.pools.find(rp.pool);
  if (pit == st.pools.end()) return false;
  Pool& pool = pit->second;
  const size_t nt = pool.targets.size();
  int32_t uid = -1, target = -1;
  for (size_t k = 0; k < nt && uid < 0; k++) {
    const size_t t = (pool.cursor + k) % nt;
    std::vector<int32_t>& v = pool.targets[t];
    while (!v.empty()) {
      const int32_t cand = v.back();
      v.pop_back();
      LentSlot* l = LentOf(cand);
      if (l == nullptr || l->state != 1) continue;
      if (!usable(arg, cand)) {
        *l = LentSlot();  // JS still counts it lent: its unlend says "not lent", its own events close it
        continue;
      }
      uid = cand;
      target = static_cast<int32_t>(t);
      pool.cursor = t + 1;
      break;
    }
  }
  if (uid < 0) return false;
  out->records.clear();
  if (!fq::Records(p, len, cfg->limits, rp.plan, cs.conn, script->data(), script->size(), kRequestId, true, &h, &out->records)) {
    // not this path's after all (a trusted peer's X-Forwarded-For, per-request params): the connection is lent again
    pool.targets[target].push_back(uid);
    return false;
  }
  LentSlot& l = st.lent[uid];
  l.state = 2;
  st.taken.push_back(uid);
  out->upstream = uid;
  out->route = static_cast<int32_t>(m.route);
  out->target = target;
  out->config = cfg->id;
  // fastcgi.ts #armAnswer: a remembered chunked answer, not for HEAD nor HTTP/1.0, the same Connection: close shape
  out->armed = rp.memo && !h.head_method && h.minor == 1 && rp.shape == (h.keep_alive ? 0 : 4);
  out->cgi = &rp.cgi;
  out->head = &rp.head;
  out->status = rp.status;
  st.declined--;
  return true;
}

namespace {

int32_t Int(const Napi::Value& v) {
  return v.As<Napi::Number>().Int32Value();
}

std::string Latin1(napi_env env, napi_value v) {
  size_t n = 0;
  napi_get_value_string_latin1(env, v, nullptr, 0, &n);
  std::string s(n, '\0');
  if (n > 0) napi_get_value_string_latin1(env, v, s.data(), n + 1, &n);
  return s;
}

std::string Bytes(const Napi::Value& v) {
  Napi::Uint8Array a = v.As<Napi::Uint8Array>();
  return std::string(reinterpret_cast<const char*>(a.Data()), a.ByteLength());
}

// exConfig(table, [headSize, uriSize, fields], routes) -> id: the config made current, for `routes` routes of which
// none is the addon's yet (exRoute hands each over).
Napi::Value ExConfig(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const rq::SharedRouteTable* table = info.Length() >= 3 ? rq::RouteTableOf(info[0]) : nullptr;
  if (table == nullptr || !info[1].IsArray() || !info[2].IsNumber()) throw Napi::TypeError::New(env, "exConfig(table, limits, routes)");
  auto cfg = std::make_unique<Config>();
  cfg->id = st.next_config++;
  cfg->table = *table;
  Napi::Array l = info[1].As<Napi::Array>();
  cfg->limits.head_size = static_cast<size_t>(l.Get(0u).As<Napi::Number>().Int64Value());
  cfg->limits.uri_size = static_cast<size_t>(l.Get(1u).As<Napi::Number>().Int64Value());
  cfg->limits.fields = l.Get(2u).As<Napi::Number>().Int32Value();
  const int32_t routes = Int(info[2]);
  if (routes < 0 || routes > (1 << 20)) throw Napi::RangeError::New(env, "exConfig: routes");
  cfg->routes.resize(static_cast<size_t>(routes));
  st.current = std::move(cfg);
  return Napi::Number::New(env, st.current->id);
}

Config* ConfigArg(const Napi::Value& v);

// exRoute(config, route, fixed, overridden, perRequest, pool): route `route` of the current config may be started
// here (fastcgi-native.ts said so): its params plan (fastcgi-params.ts nativeParamsPlan) and the pool it takes lent
// connections of.
Napi::Value ExRoute(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 6 || !info[1].IsNumber() || !info[2].IsTypedArray() || !info[3].IsArray() || !info[5].IsNumber())
    throw Napi::TypeError::New(env, "exRoute(config, route, fixed, overridden, perRequest, pool)");
  Config* c = ConfigArg(info[0]);
  const int32_t r = Int(info[1]);
  if (c == nullptr || r < 0 || static_cast<size_t>(r) >= c->routes.size()) return env.Undefined();
  std::vector<std::string> over;
  Napi::Array names = info[3].As<Napi::Array>();
  for (uint32_t k = 0; k < names.Length(); k++) over.push_back(names.Get(k).As<Napi::String>().Utf8Value());
  RoutePlan& rp = c->routes[r];
  rp.plan = fq::MakePlan(Bytes(info[2]), over, info[4].ToBoolean());
  rp.pool = Int(info[5]);
  rp.set = !rp.plan.per_request;
  return env.Undefined();
}

// exDrop(): no config is current (a runtime swap): every ready client's next read is JS's.
Napi::Value ExDrop(const Napi::CallbackInfo& info) {
  st.current.reset();
  return info.Env().Undefined();
}

Config* ConfigArg(const Napi::Value& v) {
  Config* c = st.current.get();
  return c != nullptr && v.IsNumber() && Int(v) == c->id ? c : nullptr;
}

// exReady(client, config, trusted, serverPort): the client connection is idle between exchanges with nothing
// buffered; its next read may start an exchange under `config` (the current one). `trusted`: its peer is a trusted
// proxy (forwarding.trusted_proxies); `serverPort`: its listener's port.
Napi::Value ExReady(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsNumber() || !info[1].IsNumber() || !info[3].IsNumber()) throw Napi::TypeError::New(env, "exReady(client, config, trusted, serverPort)");
  const int32_t id = Int(info[0]);
  if (id < 0 || id > (1 << 24)) return env.Undefined();
  if (static_cast<size_t>(id) >= st.clients.size()) st.clients.resize(static_cast<size_t>(id) + 1);
  ClientSlot& cs = st.clients[id];
  const bool trusted = info[2].ToBoolean();
  const int32_t port = Int(info[3]);
  if (cs.conn_state != 0 && (cs.trusted != trusted || cs.server_port != port)) cs.conn_state = 0;  // made again
  cs.trusted = trusted;
  cs.server_port = port;
  cs.config = Int(info[1]);
  cs.ready = true;
  return env.Undefined();
}

// exUnready(client): JS takes the connection back (it reads ahead, closes, or the config changed).
Napi::Value ExUnready(const Napi::CallbackInfo& info) {
  if (ClientSlot* cs = ClientOf(Int(info[0]))) cs->ready = false;
  return info.Env().Undefined();
}

// exScript(config, route, path, pairs, untilMs): route's request path `path` runs the script whose pairs are
// `pairs` (binary string) until untilMs (Date.now() clock). exScriptForget(config, route, path).
Napi::Value ExScript(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 5 || !info[2].IsString() || !info[3].IsString() || !info[4].IsNumber()) throw Napi::TypeError::New(env, "exScript(config, route, path, pairs, untilMs)");
  Config* c = ConfigArg(info[0]);
  if (c == nullptr) return env.Undefined();
  const std::string path = Latin1(env, info[2]);
  c->scripts.Put(static_cast<uint32_t>(Int(info[1])), reinterpret_cast<const uint8_t*>(path.data()), path.size(), Latin1(env, info[3]), info[4].As<Napi::Number>().DoubleValue());
  return env.Undefined();
}

Napi::Value ExScriptForget(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Config* c = ConfigArg(info[0]);
  if (c == nullptr || !info[2].IsString()) return env.Undefined();
  const std::string path = Latin1(env, info[2]);
  c->scripts.Forget(static_cast<uint32_t>(Int(info[1])), reinterpret_cast<const uint8_t*>(path.data()), path.size());
  return env.Undefined();
}

// exMemo(config, route, cgi | null, head, shape, status): the route's head memo as fastcgi.ts has it now (null: none
// the addon may use).
Napi::Value ExMemo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Config* c = ConfigArg(info[0]);
  const int32_t r = info.Length() >= 6 && info[1].IsNumber() ? Int(info[1]) : -1;
  if (c == nullptr || r < 0 || static_cast<size_t>(r) >= c->routes.size()) return env.Undefined();
  RoutePlan& rp = c->routes[r];
  rp.memo = info[2].IsTypedArray() && info[3].IsTypedArray();
  if (!rp.memo) return env.Undefined();
  rp.cgi = Bytes(info[2]);
  rp.head = Bytes(info[3]);
  rp.shape = Int(info[4]);
  rp.status = Int(info[5]);
  if (rp.cgi.empty()) rp.memo = false;
  return env.Undefined();
}

// exLend(pool, target, conn): an idle kept-alive FPM connection of pool `pool`'s target `target` may be taken.
Napi::Value ExLend(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsNumber()) throw Napi::TypeError::New(env, "exLend(pool, target, conn)");
  const int32_t pool = Int(info[0]), target = Int(info[1]), id = Int(info[2]);
  if (id < 0 || id > (1 << 24) || target < 0 || target > 4096) return env.Undefined();
  if (static_cast<size_t>(id) >= st.lent.size()) st.lent.resize(static_cast<size_t>(id) + 1);
  LentSlot& l = st.lent[id];
  if (l.state == 1) Unlist(l, id);
  l.state = 1;
  l.pool = pool;
  l.target = target;
  Pool& p = st.pools[pool];
  if (p.targets.size() <= static_cast<size_t>(target)) p.targets.resize(static_cast<size_t>(target) + 1);
  p.targets[target].push_back(id);
  return env.Undefined();
}

// exUnlend(conn) -> 1: it was lent and is JS's again; 0: taken by the addon (a STARTED event of the batch names it);
// 2: not lent (never, or dropped: the addon saw it close or speak, JS's own events for it follow).
Napi::Value ExUnlend(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int32_t id = Int(info[0]);
  LentSlot* l = LentOf(id);
  if (l == nullptr || l->state == 0) return Napi::Number::New(env, 2);
  if (l->state == 2) return Napi::Number::New(env, 0);
  Unlist(*l, id);
  *l = LentSlot();
  return Napi::Number::New(env, 1);
}

// exPoolDrop(pool): the pool is closed or retired: its lent lists go (JS unlends each connection as well).
Napi::Value ExPoolDrop(const Napi::CallbackInfo& info) {
  st.pools.erase(Int(info[0]));
  return info.Env().Undefined();
}

// exStats() -> { declined, scripts }: reads of ready clients left to JS; the script cache's entries. (The exchanges
// started are io.cc's count, made once the records were sent: ioStats().started.)
Napi::Value ExStats(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("declined", Napi::Number::New(info.Env(), st.declined));
  o.Set("scripts", Napi::Number::New(info.Env(), st.current == nullptr ? 0 : static_cast<double>(st.current->scripts.size())));
  return o;
}

}  // namespace

void Register(Napi::Env env, Napi::Object exports) {
  exports.Set("exConfig", Napi::Function::New(env, ExConfig, "exConfig"));
  exports.Set("exRoute", Napi::Function::New(env, ExRoute, "exRoute"));
  exports.Set("exDrop", Napi::Function::New(env, ExDrop, "exDrop"));
  exports.Set("exReady", Napi::Function::New(env, ExReady, "exReady"));
  exports.Set("exUnready", Napi::Function::New(env, ExUnready, "exUnready"));
  exports.Set("exScript", Napi::Function::New(env, ExScript, "exScript"));
  exports.Set("exScriptForget", Napi::Function::New(env, ExScriptForget, "exScriptForget"));
  exports.Set("exMemo", Napi::Function::New(env, ExMemo, "exMemo"));
  exports.Set("exLend", Napi::Function::New(env, ExLend, "exLend"));
  exports.Set("exUnlend", Napi::Function::New(env, ExUnlend, "exUnlend"));
  exports.Set("exPoolDrop", Napi::Function::New(env, ExPoolDrop, "exPoolDrop"));
  exports.Set("exStats", Napi::Function::New(env, ExStats, "exStats"));
}

}  // namespace portico::nx
