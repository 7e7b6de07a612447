// L4 listeners served wholly by the addon (l4.cc): accept, balancer pick, connect with timeout, PROXY header out,
// then the splice relay. addon.cc registers the JS functions and routes the relay ends of L4 connections here.
#pragma once

#include <napi.h>

#include "relay.h"

namespace portico::l4 {
// `engine` is the addon's one relay engine: L4 connections are spliced by it like every other tunnel.
void Register(Napi::Env env, Napi::Object exports, RelayEngine* engine);
// Relay thread: true when relay `end.id` carried an L4 connection (its record is queued for JS here).
bool ClaimRelayEnd(const RelayEnd& end);
}  // namespace portico::l4
