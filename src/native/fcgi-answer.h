// FastCGI's common answer, read and framed in C++ (fcgi-answer.cc) so that io.cc can relay an application's answer
// to its client without JavaScript per exchange. The records are read as src/wire/fastcgi.ts RecordReader reads
// them (version 1, the request id sent, STDOUT / STDERR / END_REQUEST, END_REQUEST of 8 bytes, padding skipped) and
// the client's bytes are what src/handlers/fastcgi.ts writes for an answer whose first STDOUT bytes are the route's
// remembered CGI head: the client head JS gave for it, each STDOUT piece as one chunk, the last chunk at
// END_REQUEST (REQUEST_COMPLETE). Only that: anything else before the head went out is "not mine" (the read goes to
// JavaScript untouched), and anything else after it is handed over at its record's first byte, so JavaScript reads
// it from a record boundary and does with it what it always does (a STDERR line logged, a bad record a 502).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace portico::fa {

// What JS armed an upstream with, and the reader's state between two reads of it.
struct Answer {
  std::string cgi;   // the route's remembered CGI head, its empty line included
  std::string head;  // the client head JS gave for it (chunked framing, the Connection line chosen)
  uint16_t request_id = 1;
  bool head_done = false;     // the head went out: reads continue the answer
  uint32_t content_left = 0;  // STDOUT content of the record in progress, still to come
  uint32_t padding_left = 0;  // its padding, still to come
  void Reset() {
    head_done = false;
    content_left = 0;
    padding_left = 0;
  }
};

enum class Result {
  kMore,      // all of it taken; the answer goes on in the next read
  kDone,      // END_REQUEST (REQUEST_COMPLETE) read: the answer is whole
  kHandover,  // taken up to `used` (a record's first byte, after the head): the rest is JavaScript's
  kNotMine,   // the head did not go out: nothing taken, the whole read is JavaScript's
};

struct Step {
  Result result = Result::kNotMine;
  size_t used = 0;     // bytes of the read taken (kDone: up to the end of END_REQUEST and its padding)
  bool extra = false;  // kDone: bytes came after END_REQUEST in the same read (dropped: not reusable)
};

// Reads p[0..len), one read of the application's stream, and writes the client's bytes for it into `out`
// (replaced). Bounded: nothing of the stream is held between reads but the counts in `a`.
Step Feed(Answer& a, const uint8_t* p, size_t len, std::string* out);

}  // namespace portico::fa
