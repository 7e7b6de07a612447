// The byte classes and field-line reading of an HTTP/1.1 head, shared by the addon's head readers (response-head.cc,
// request-head.cc): the same rules as src/wire/http-head.ts, written once. Pure inline functions over bytes; a reader
// that finds anything outside them says "not mine" and leaves the bytes to JavaScript.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace portico::hs {

constexpr uint8_t CR = 0x0d;
constexpr uint8_t LF = 0x0a;
constexpr uint8_t SP = 0x20;
constexpr uint8_t HTAB = 0x09;

// tchar (RFC 9110 §5.6.2), as http-head.ts TCHAR: a table, names are read byte by byte on every head
struct ByteSet {
  bool has[256];
};
constexpr ByteSet MakeTchar() {
  ByteSet t{};
  for (int c = '0'; c <= '9'; c++) t.has[c] = true;
  for (int c = 'a'; c <= 'z'; c++) t.has[c] = true;
  for (int c = 'A'; c <= 'Z'; c++) t.has[c] = true;
  for (const char* s = "!#$%&'*+-.^_`|~"; *s != 0; s++) t.has[static_cast<uint8_t>(*s)] = true;
  return t;
}
inline constexpr ByteSet kTchar = MakeTchar();
inline bool Tchar(uint8_t c) {
  return kTchar.has[c];
}

// field-vchar / SP / HTAB, obs-text included (http-head.ts FIELD_VALUE): no NUL, CR, LF, DEL or other CTL
inline bool ValueByte(uint8_t c) {
  return c == HTAB || (c >= 0x20 && c != 0x7f);
}

inline uint8_t Lower(uint8_t c) {
  return c >= 'A' && c <= 'Z' ? static_cast<uint8_t>(c | 0x20) : c;
}

// p[a..b) lower-cased (ASCII) equals the lower-case `name` of length n
inline bool EqLower(const uint8_t* p, size_t a, size_t b, const char* name, size_t n) {
  if (b - a != n) return false;
  for (size_t k = 0; k < n; k++)
    if (Lower(p[a + k]) != static_cast<uint8_t>(name[k])) return false;
  return true;
}

inline bool EqLowerRange(const uint8_t* p, size_t a, size_t b, const uint8_t* q, size_t c, size_t d) {
  if (b - a != d - c) return false;
  for (size_t k = 0; k < b - a; k++)
    if (Lower(p[a + k]) != Lower(q[c + k])) return false;
  return true;
}

// p[a..b) lower-cased is one of `names` (lower-case): a plan's names to drop
inline bool NameIn(const uint8_t* p, size_t a, size_t b, const std::vector<std::string>& names) {
  for (const std::string& s : names)
    if (EqLower(p, a, b, s.data(), s.size())) return true;
  return false;
}

// One field line: the name p[ns..ne), the value p[vs..ve) trimmed of OWS.
struct Field {
  uint32_t ns, ne, vs, ve;
};

// field-line CRLF at p[i..end) (RFC 9112 §5): tchar name, ':', OWS, field-vchar/SP/HTAB value, CRLF; no obs-fold, no
// whitespace before the colon (http-head.ts scanFields). Returns the index after its CRLF and fills `f`, or 0 when
// the bytes there are not such a line or the line runs past `end`.
inline size_t FieldLine(const uint8_t* p, size_t i, size_t end, Field* f) {
  const size_t ns = i;
  while (i < end && Tchar(p[i])) i++;
  if (i == ns || i >= end || p[i] != ':') return 0;
  const size_t ne = i++;
  while (i < end && (p[i] == SP || p[i] == HTAB)) i++;
  const size_t vs = i;
  while (i < end && ValueByte(p[i])) i++;
  if (i + 1 >= end || p[i] != CR || p[i + 1] != LF) return 0;
  size_t ve = i;
  while (ve > vs && (p[ve - 1] == SP || p[ve - 1] == HTAB)) ve--;
  *f = Field{static_cast<uint32_t>(ns), static_cast<uint32_t>(ne), static_cast<uint32_t>(vs), static_cast<uint32_t>(ve)};
  return i + 2;
}

// The field lines from p[i] to the empty line that ends the head, within p[..end): `each(field)` gets every line in
// order (false from it: not mine). Returns the index after the final CRLF, or 0 when a line is not a field-line, the
// head runs past `end`, or it has more than `max_fields` fields.
template <class Each>
inline size_t FieldLines(const uint8_t* p, size_t i, size_t end, int max_fields, Each each) {
  for (int n = 0;; n++) {
    if (i >= end) return 0;
    if (p[i] == CR) return i + 1 < end && p[i + 1] == LF ? i + 2 : 0;
    Field f;
    if (n >= max_fields || (i = FieldLine(p, i, end, &f)) == 0 || !each(f)) return 0;
  }
}

// The elements of the #list value p[a..b) (RFC 9110 §5.6.1, as http-head.ts readConnection): each trimmed of OWS,
// empty ones skipped. `each(es, ee)` gets every element in order; false from it stops the walk (and returns false).
template <class Each>
inline bool ForEachElement(const uint8_t* p, size_t a, size_t b, Each each) {
  size_t k = a;
  while (k < b) {
    if (p[k] == ',' || p[k] == SP || p[k] == HTAB) {
      k++;
      continue;
    }
    const size_t es = k;
    while (k < b && p[k] != ',') k++;
    size_t ee = k;
    while (ee > es && (p[ee - 1] == SP || p[ee - 1] == HTAB)) ee--;
    if (!each(es, ee)) return false;
  }
  return true;
}

}  // namespace portico::hs
