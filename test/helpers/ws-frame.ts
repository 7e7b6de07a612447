// WebSocket frames built by hand for tests that put exact bytes on a tunnel (RFC 6455 §5.2).

/** A frame as RFC 6455 §5.2 lays it out; masked (client to server) when `mask` is given; `fin: false` for a fragment. */
export function wsFrame(opcode: number, payload: Buffer, opts: { mask?: Buffer; fin?: boolean } = {}): Buffer {
  const len = payload.length;
  const ext = len < 126 ? [len] : len < 65536 ? [126, len >> 8, len & 0xff] : [127, 0, 0, 0, 0, (len >>> 24) & 0xff, (len >> 16) & 0xff, (len >> 8) & 0xff, len & 0xff];
  ext[0] |= opts.mask === undefined ? 0 : 0x80;
  const body = opts.mask === undefined ? payload : Buffer.from(payload.map((b, i) => b ^ opts.mask![i % 4]));
  return Buffer.concat([Buffer.from([(opts.fin === false ? 0 : 0x80) | opcode, ...ext]), opts.mask ?? Buffer.alloc(0), body]);
}

/** A Close frame with status 1000 (normal closure), masked when `mask` is given. */
export function wsClose(mask?: Buffer): Buffer {
  return wsFrame(0x8, Buffer.from([0x03, 0xe8]), { mask });
}
