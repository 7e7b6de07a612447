// The handle JS holds for a compiled route table (routeTableCompile in io.cc): shared by the addon's holders (the
// native exchange's config keeps one), so a reload's new table replaces it in JS while whatever still uses the old
// one keeps it alive. The type tag tells a route table's External from any other.
#pragma once

#include <napi.h>

#include <memory>

#include "route-table.h"

namespace portico::rq {

using SharedRouteTable = std::shared_ptr<const RouteTable>;
constexpr napi_type_tag kRouteTableTag = {0x706f727469636f2dULL, 0x726f7574652d7462ULL};

// The table behind a routeTableCompile handle, or null when `v` is not one.
inline const SharedRouteTable* RouteTableOf(Napi::Value v) {
  if (!v.IsExternal()) return nullptr;
  auto handle = v.As<Napi::External<SharedRouteTable>>();
  if (!handle.CheckTypeTag(&kRouteTableTag)) return nullptr;
  return handle.Data();
}

}  // namespace portico::rq
