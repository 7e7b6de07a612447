# Portico's optional native addon (src/native/): SO_REUSEPORT listeners, fd helpers, the splice relay,
# socket I/O for the plain-TCP HTTP data path.
# Built by `node scripts/build-native.js` on `npm install`; a failed build leaves Portico on its JS paths.
# N-API (node-addon-api) so one build keeps loading across Node upgrades.
{
  "targets": [
    {
      "target_name": "portico_native",
      "sources": ["src/native/addon.cc", "src/native/relay.cc", "src/native/io.cc", "src/native/tls.cc", "src/native/tls-relay.cc", "src/native/l4.cc", "src/native/client-table.cc", "src/native/end-bridge.cc", "src/native/response-head.cc", "src/native/request-head.cc", "src/native/route-table.cc", "src/native/fcgi-answer.cc", "src/native/fcgi-request.cc", "src/native/exchange.cc", "src/native/script-cache.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "conditions": [
        ["OS!='linux'", { "type": "none", "sources": [] }]
      ]
    }
  ]
}
