// Where the WebSocket frames of one direction of a spliced tunnel begin and end (RFC 6455 §5.2), followed from
// the frame headers as they pass the relay, so it can put a Close frame of its own between two frames at
// shutdown. Headers only: payloads are skipped by length, never unmasked or read. The JS relay's twin is
// src/wire/ws-frames.ts; this one is stricter (a header no endpoint may send stops the tracking, see Check()).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace portico {

class FrameTracker {
 public:
  // `masked`: the direction's frames must carry a mask (client to server, RFC 6455 §5.3), else must not.
  explicit FrameTracker(bool masked = false) : masked_(masked) {}

  // Between two frames: a frame written now cannot cut into another.
  bool AtBoundary() const { return !broken_ && payload_left_ == 0 && header_len_ == 0; }
  // A header broke the rules (see Check()): where frames end is no longer known, and never guessed.
  bool Broken() const { return broken_; }
  // A Close frame went this way: after it the sender may send nothing more (RFC 6455 §5.5.1).
  bool CloseSeen() const { return close_seen_; }
  // Payload bytes of the current frame still to come (0 while a header is incomplete).
  uint64_t PayloadLeft() const { return payload_left_; }

  // How many bytes end the frame in progress, as far as is known now: the payload left, or the rest of a
  // header (the bytes needed to learn its length first). 0 at a boundary or when broken.
  uint64_t ToBoundary() const {
    if (broken_) return 0;
    if (payload_left_ > 0) return payload_left_;
    return header_len_ == 0 ? 0 : HeaderLength() - header_len_;
  }

  // Follows every byte of data[0..n). Bounded: at most 14 header bytes are ever kept.
  void Feed(const uint8_t* data, size_t n) {
    size_t i = 0;
    while (i < n && !broken_) {
      if (payload_left_ > 0) {
        const uint64_t take = std::min<uint64_t>(payload_left_, n - i);
        payload_left_ -= take;
        i += static_cast<size_t>(take);
        continue;
      }
      header_[header_len_++] = data[i++];
      // the first two bytes say everything but the length's value: check them as soon as they are in
      if (header_len_ == 2 && !Check()) {
        broken_ = true;
        break;
      }
      if (header_len_ < HeaderLength()) continue;
      Complete();
    }
  }

  // Follows n payload bytes moved without being looked at (spliced); n <= PayloadLeft().
  void SkipPayload(uint64_t n) { payload_left_ -= std::min(n, payload_left_); }

 private:
  static constexpr uint8_t kOpClose = 0x8;

  size_t HeaderLength() const {
    if (header_len_ < 2) return 2;
    const uint8_t len7 = header_[1] & 0x7f;
    return 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + ((header_[1] & 0x80) ? 4 : 0);
  }

  // Strict on what decides framing: a known opcode (0-2 data, 8-10 control), control frames unfragmented and
  // at most 125 bytes, the mask bit as the direction requires. RSV bits are the extensions' business (not
  // checked); a length in more bytes than needed is accepted (its value is still exact).
  bool Check() const {
    const uint8_t op = header_[0] & 0x0f;
    const bool fin = (header_[0] & 0x80) != 0;
    const uint8_t len7 = header_[1] & 0x7f;
    if (op > 0xA || (op > 0x2 && op < 0x8)) return false;
    if ((op & 0x8) != 0 && (!fin || len7 > 125)) return false;
    return ((header_[1] & 0x80) != 0) == masked_;
  }

  void Complete() {
    const uint8_t len7 = header_[1] & 0x7f;
    uint64_t len = len7;
    if (len7 == 126) {
      len = (static_cast<uint64_t>(header_[2]) << 8) | header_[3];
    } else if (len7 == 127) {
      // RFC 6455 §5.2: the most significant bit MUST be 0
      if ((header_[2] & 0x80) != 0) {
        broken_ = true;
        return;
      }
      len = 0;
      for (int k = 2; k < 10; k++) len = (len << 8) | header_[k];
    }
    if ((header_[0] & 0x0f) == kOpClose) close_seen_ = true;
    header_len_ = 0;
    payload_left_ = len;
  }

  bool masked_;
  bool broken_ = false;
  bool close_seen_ = false;
  uint8_t header_len_ = 0;
  uint8_t header_[14] = {};
  uint64_t payload_left_ = 0;
};

// The WebSocket end rule of every relay (relay.cc, tls-relay.cc; the JS relay's twin is ws-frames.ts endsAtOnce):
// the peer whose direction `ender` follows ended its connection, and the tunnel ends at once (both closed once what
// that peer sent is out) instead of passing its FIN on, as nginx ends an upgraded connection at its first end. Yes
// when that peer dropped the WebSocket (no Close frame from it, its framing followed: RFC 6455 §7.1.5, closed
// abnormally), which has no half-closed state; and when the closing handshake is done (a Close each way, `other`'s
// relayed whole: at a frame boundary and `other_flushed`, nothing of it held by the relay): neither peer may send
// anything more (§5.5.1). An end after a Close the other peer has not answered yet, or on bytes that are not frames,
// keeps half-close. The relay adds its own conditions (a WebSocket relay, no shutdown under way).
inline bool EndsAtOnce(const FrameTracker& ender, const FrameTracker& other, bool other_flushed) {
  if (ender.Broken()) return false;
  if (!ender.CloseSeen()) return true;
  return other.CloseSeen() && other.AtBoundary() && other_flushed;
}

}  // namespace portico
