// One JSON line written straight into bytes: ASCII pieces known in advance (keys, separators, cached fields) are
// copied, numbers are printed digit by digit, strings are copied as they are unless they need escaping. The
// access log builds each request's line here instead of concatenating strings: no rope to flatten and encode, no
// string per number, nothing left for the garbage collector. A line is written into its own buffer, or straight
// into someone else's (a LineWriter's chunk), moving to its own only if it outgrows the room there. It only
// writes bytes; what a line says is the caller's.

/** Node's own encoders of Buffer.prototype (what `buf.write(s, off, enc)` calls after parsing its arguments). */
interface Encoders {
  latin1Write(s: string, offset: number): number;
  utf8Write(s: string, offset: number): number;
}

/** A string JSON holds as it is, in one byte per character: printable ASCII but '"' and '\\'. */
const PLAIN = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

/** Strings up to this long are checked and copied in one JS loop; longer ones by a regex and Node's encoder. */
const SHORT = 48;

/** Line lengths whose view of the buffer is kept (line()). */
const VIEWS = 2048;

/** A line is grown past this only by a field made of escapes (bounded by the caller's cut of every string). */
const INITIAL_BYTES = 8 * 1024;

/** ASCII text as bytes, for the constant pieces of a line. */
export function ascii(s: string): Buffer {
  return Buffer.from(s, 'latin1');
}

export class JsonLine {
  /** The line's own buffer. */
  #own: Buffer = Buffer.allocUnsafeSlow(INITIAL_BYTES);
  /** Where the line is written: #own, or the buffer given to into(); the line starts at #start. */
  #buf: Buffer = this.#own;
  #start = 0;
  #len = 0;
  /**
   * Views of #own from 0, by length: a line's length takes a few dozen values, and a view made per line (a
   * typed-array object) cost as much as copying the line. Only short lengths are kept, so at most VIEWS of them.
   */
  #views: (Uint8Array | undefined)[] = [];

  /** Bytes written since reset() or into(). */
  get length(): number {
    return this.#len - this.#start;
  }

  /** A new line, in the line's own buffer. */
  reset(): void {
    this.#buf = this.#own;
    this.#start = 0;
    this.#len = 0;
  }

  /**
   * A new line written into `buf` from `at` (a writer's chunk: no copy afterwards); it moves to the line's own
   * buffer if it outgrows `buf`, leaving there only bytes past the caller's length. inPlace() says where it ended.
   */
  into(buf: Buffer, at: number): void {
    this.#buf = buf;
    this.#start = at;
    this.#len = at;
  }

  /** The line is still in the buffer given to into(), from its `at`, length() bytes. */
  get inPlace(): boolean {
    return this.#buf !== this.#own;
  }

  #room(n: number): void {
    if (this.#len + n <= this.#buf.length) return;
    // past the end of a borrowed buffer or of the own one: the line so far moves to a large enough own buffer
    const used = this.#len - this.#start;
    const from = this.#buf;
    if (this.#own.length < used + n) {
      this.#own = Buffer.allocUnsafeSlow(Math.max(this.#own.length * 2, used + n));
      this.#views = [];
    }
    from.copy(this.#own, 0, this.#start, this.#len);
    this.#buf = this.#own;
    this.#start = 0;
    this.#len = used;
  }

  /** Bytes made before (a constant, a cached field). */
  raw(b: Uint8Array): void {
    this.#room(b.length);
    this.#buf.set(b, this.#len);
    this.#len += b.length;
  }

  /** One ASCII character by its code. */
  byte(c: number): void {
    this.#room(1);
    this.#buf[this.#len++] = c;
  }

  /** A number as String(n) prints it; integers from 0 up without making a string. */
  int(n: number): void {
    if (n >= 0 && n <= 0x7fffffff && (n | 0) === n) {
      this.#small(n);
      return;
    }
    if (!(n >= 0 && n <= Number.MAX_SAFE_INTEGER && Math.floor(n) === n)) {
      this.#latin1(String(n));
      return;
    }
    let digits = 1;
    for (let t = n; t >= 10; t = Math.floor(t / 10)) digits++;
    this.#room(digits);
    const buf = this.#buf;
    let at = this.#len + digits;
    this.#len = at;
    do {
      buf[--at] = 48 + (n % 10);
      n = Math.floor(n / 10);
    } while (n > 0);
  }

  /** An integer from 0 to 2^31 - 1, in 32-bit arithmetic. */
  #small(n: number): void {
    let digits = 1;
    for (let t = n; t >= 10; t = (t / 10) | 0) digits++;
    this.#room(digits);
    const buf = this.#buf;
    let at = this.#len + digits;
    this.#len = at;
    do {
      const q = (n / 10) | 0;
      buf[--at] = 48 + n - q * 10;
      n = q;
    } while (n > 0);
  }

  /**
   * Milliseconds with µs precision: the text of String(Math.round(v * 1000) / 1000) (decimals without trailing
   * zeros, none for a whole number), from integers.
   */
  ms(v: number): void {
    const us = Math.round(v * 1000);
    if (!(us >= 0 && us <= Number.MAX_SAFE_INTEGER)) {
      this.#latin1(String(Math.round(v * 1000) / 1000));
      return;
    }
    const frac = us % 1000;
    this.int((us - frac) / 1000);
    if (frac === 0) return;
    this.#fraction(frac);
  }

  /** '.1' ... '.999' for 1..999 thousandths, without trailing zeros. */
  #fraction(frac: number): void {
    this.#room(4);
    const buf = this.#buf;
    const d1 = (frac / 100) | 0;
    const d2 = ((frac / 10) | 0) % 10;
    const d3 = frac % 10;
    buf[this.#len++] = 46; // '.'
    buf[this.#len++] = 48 + d1;
    if (d2 !== 0 || d3 !== 0) buf[this.#len++] = 48 + d2;
    if (d3 !== 0) buf[this.#len++] = 48 + d3;
  }

  /** `v` as a JSON string, quotes included, cut to `max` UTF-16 units first. */
  string(v: string, max: number): void {
    if (v.length > max) v = v.slice(0, max);
    if (v.length <= SHORT) {
      if (this.#short(v)) return;
    } else if (PLAIN.test(v)) {
      this.#room(v.length + 2);
      const buf = this.#buf;
      buf[this.#len++] = 34;
      this.#len += (buf as Buffer & Encoders).latin1Write(v, this.#len);
      buf[this.#len++] = 34;
      return;
    }
    // escapes, non-ASCII text, lone surrogates (written as `\udXXX`): JSON.stringify's text, as UTF-8
    const s = JSON.stringify(v);
    this.#room(s.length * 3);
    this.#len += (this.#buf as Buffer & Encoders).utf8Write(s, this.#len);
  }

  /**
   * A short string quoted in one pass that checks and copies each character (cheaper than a regex scan and a call
   * to the encoder); false, with nothing written, when a character is not plain.
   */
  #short(v: string): boolean {
    const n = v.length;
    this.#room(n + 2);
    const buf = this.#buf;
    const at = this.#len;
    buf[at] = 34;
    for (let i = 0; i < n; i++) {
      const c = v.charCodeAt(i);
      if (c < 0x20 || c > 0x7e || c === 34 || c === 92) return false;
      buf[at + 1 + i] = c;
    }
    buf[at + 1 + n] = 34;
    this.#len = at + n + 2;
    return true;
  }

  /** Text known to be printable ASCII with nothing to escape: a number's String(). */
  #latin1(s: string): void {
    this.#room(s.length);
    this.#len += (this.#buf as Buffer & Encoders).latin1Write(s, this.#len);
  }

  /** The line's bytes, as a view valid until the next line is written (or the borrowed buffer is reused). */
  line(): Uint8Array {
    const n = this.#len - this.#start;
    if (this.#buf !== this.#own || n >= VIEWS) return this.#buf.subarray(this.#start, this.#len);
    let v = this.#views[n];
    if (v === undefined) {
      v = new Uint8Array(this.#own.buffer, this.#own.byteOffset, n);
      this.#views[n] = v;
    }
    return v;
  }

  /** A copy of the bytes from `start` (a length() of before) to the end, to be given to raw() again (a cached field). */
  copyFrom(start: number): Buffer {
    return Buffer.from(this.#buf.subarray(this.#start + start, this.#len));
  }

  /** The line so far as a string (a tunnel keeps its opening fields as one). */
  text(start = 0): string {
    return this.#buf.toString('utf8', this.#start + start, this.#len);
  }
}
