// Native socket I/O on the JS thread's loop (io.cc): registers its functions on the addon's exports.
#pragma once

#include <napi.h>

namespace portico::io {
void Register(Napi::Env env, Napi::Object exports);
}
