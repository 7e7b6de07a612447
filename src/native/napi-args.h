// Arguments from JavaScript, checked as the addon's entries take them: a clear TypeError or RangeError naming the
// argument, never a silent cast. Shared by the N-API entries of l4.cc, client-table.cc, addon.cc and tls-relay.cc.
#ifndef PORTICO_NATIVE_NAPI_ARGS_H_
#define PORTICO_NATIVE_NAPI_ARGS_H_

#include <napi.h>

#include <cstdint>
#include <string>

namespace portico {

// `v` as a 32-bit unsigned integer; `what` names it in the error.
inline uint32_t U32(const Napi::Value& v, const char* what) {
  if (!v.IsNumber()) throw Napi::TypeError::New(v.Env(), std::string(what) + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (d < 0 || d > 0xffffffffu || d != static_cast<uint32_t>(d)) throw Napi::RangeError::New(v.Env(), std::string(what) + " must be a 32-bit unsigned integer");
  return static_cast<uint32_t>(d);
}

// An optional duration in milliseconds: undefined is 0 (none); else as U32 (whole ms, at most ~49 days: the relays
// keep bounds in 32 bits; the config's durations stop at ~24.8 days); `what` names it in the error.
inline uint32_t OptionalMs(const Napi::Value& v, const char* what) {
  if (v.IsUndefined()) return 0;
  return U32(v, what);
}

}  // namespace portico

#endif  // PORTICO_NATIVE_NAPI_ARGS_H_
