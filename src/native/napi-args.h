// Arguments from JavaScript, checked as the addon's entries take them: a clear TypeError or RangeError naming the
// argument, never a silent cast. Shared by the N-API entries of l4.cc and client-table.cc.
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

}  // namespace portico

#endif  // PORTICO_NATIVE_NAPI_ARGS_H_
