// What a FastCGI application made for a test (a liar, a slow one) reads from Portico: its input cut into whole
// records, the request's params decoded once their empty record ends them. A test tool: no checks beyond framing.
import { decodePairs } from '../../src/wire/fastcgi.js';

/**
 * A 'data' listener calling `onRecord` once per whole record (type, content), in order; at the params' end
 * (the empty PARAMS record) with the request's pairs too (undefined when they do not decode).
 */
export function fcgiRecords(onRecord: (type: number, content: Buffer, pairs?: Map<string, string> | null) => void): (chunk: Buffer) => void {
  let buf = Buffer.alloc(0);
  let params = Buffer.alloc(0);
  return (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    while (buf.length >= 8) {
      const len = buf.readUInt16BE(4);
      const total = 8 + len + buf[6];
      if (buf.length < total) return;
      const type = buf[1];
      const content = buf.subarray(8, 8 + len);
      buf = buf.subarray(total);
      if (type === 4 && len > 0) params = Buffer.concat([params, content]);
      if (type === 4 && len === 0) {
        const pairs = decodePairs(params);
        params = Buffer.alloc(0);
        onRecord(type, content, pairs);
      } else onRecord(type, content);
    }
  };
}
