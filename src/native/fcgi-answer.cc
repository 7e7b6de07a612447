// See fcgi-answer.h. Pure: no sockets, no N-API; io.cc calls it on each read of an upstream armed by ioFcgiAnswer.
#include "fcgi-answer.h"

#include <cstring>

namespace portico::fa {
namespace {

// FastCGI 1.0 §3.3, §8 (src/wire/fastcgi.ts)
constexpr uint8_t kVersion1 = 1;
constexpr uint8_t kEndRequest = 3;
constexpr uint8_t kStdout = 6;
constexpr size_t kHeaderLen = 8;
constexpr size_t kEndBodyLen = 8;
constexpr uint8_t kRequestComplete = 0;

// One STDOUT piece as one chunk (fastcgi.ts #relayBody: the length in lower-case hex, CRLF, the bytes, CRLF).
void Chunk(std::string* out, const uint8_t* p, size_t n) {
  char size[20];
  int k = 0;
  char digits[16];
  size_t v = n;
  do {
    digits[k++] = "0123456789abcdef"[v & 0xf];
    v >>= 4;
  } while (v != 0);
  int w = 0;
  while (k > 0) size[w++] = digits[--k];
  size[w++] = '\r';
  size[w++] = '\n';
  out->append(size, static_cast<size_t>(w));
  out->append(reinterpret_cast<const char*>(p), n);
  out->append("\r\n", 2);
}

}  // namespace

Step Feed(Answer& a, const uint8_t* p, size_t len, std::string* out) {
  out->clear();
  size_t i = 0;
  // Before the head went out nothing is taken unless the head goes out in this read; after it, whatever this path
  // does not take is handed over at its record's first byte (JavaScript's reader starts there, at a boundary).
  auto decline = [&](size_t at) -> Step {
    if (!a.head_done) {
      out->clear();
      return Step{Result::kNotMine, 0, false};
    }
    return Step{Result::kHandover, at, false};
  };
  for (;;) {
    if (a.content_left > 0) {
      if (i == len) return Step{Result::kMore, len, false};
      size_t take = len - i < a.content_left ? len - i : a.content_left;
      Chunk(out, p + i, take);
      a.content_left -= static_cast<uint32_t>(take);
      i += take;
      continue;
    }
    if (a.padding_left > 0) {
      // (before the head, an empty STDOUT record's padding: the read ends before the head went out)
      if (i == len) return a.head_done ? Step{Result::kMore, len, false} : decline(i);
      size_t take = len - i < a.padding_left ? len - i : a.padding_left;
      a.padding_left -= static_cast<uint32_t>(take);
      i += take;
      continue;
    }
    // at a record's first byte: its header must be whole in this read (a split one is JavaScript's)
    if (i == len) return a.head_done ? Step{Result::kMore, len, false} : decline(i);
    if (len - i < kHeaderLen) return decline(i);
    const uint8_t* h = p + i;
    uint8_t type = h[1];
    uint32_t id = (static_cast<uint32_t>(h[2]) << 8) | h[3];
    uint32_t clen = (static_cast<uint32_t>(h[4]) << 8) | h[5];
    uint32_t pad = h[6];
    // STDERR (a line to log), another version, request or type: JavaScript's reader says what it is
    if (h[0] != kVersion1 || id != a.request_id || (type != kStdout && type != kEndRequest)) return decline(i);
    if (type == kEndRequest) {
      // whole in this read, 8 bytes, REQUEST_COMPLETE: the last chunk; anything else is JavaScript's to judge
      if (!a.head_done || clen != kEndBodyLen || len - i < kHeaderLen + kEndBodyLen + pad) return decline(i);
      if (h[kHeaderLen + 4] != kRequestComplete) return decline(i);
      size_t end = i + kHeaderLen + kEndBodyLen + pad;
      out->append("0\r\n\r\n", 5);
      return Step{Result::kDone, end, end < len};
    }
    i += kHeaderLen;
    a.padding_left = pad;
    if (!a.head_done) {
      if (clen == 0) continue;  // an empty STDOUT record: nothing to relay (the reader makes no call for it)
      // the first STDOUT piece (this record's bytes in this read) starts with the remembered head, whole
      size_t piece = len - i < clen ? len - i : clen;
      if (piece < a.cgi.size() || std::memcmp(p + i, a.cgi.data(), a.cgi.size()) != 0) return decline(i);
      out->append(a.head);
      a.head_done = true;
      i += a.cgi.size();
      a.content_left = clen - static_cast<uint32_t>(a.cgi.size());
      continue;
    }
    a.content_left = clen;
  }
}

}  // namespace portico::fa
