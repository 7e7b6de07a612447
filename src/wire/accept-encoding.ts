// `Accept-Encoding` (RFC 9110 §12.5.3): which content coding, of those Portico can send, a client prefers.
// q-values are honoured (q=0 refuses a coding, `*` stands for codings not named; a coding named twice gets the
// lower of its weights); at equal q the order of
// `offered` decides (brotli before gzip). Pure and bounded: never throws; a malformed element is skipped.

export type Coding = 'br' | 'gzip';

/** The coding to use, or null: identity (nothing offered is acceptable, or the header is absent). */
export function chooseEncoding(header: string | undefined, offered: readonly Coding[]): Coding | null {
  if (header === undefined || offered.length === 0) return null;
  let star = -1;
  const q = new Map<string, number>();
  let elements = 0;
  for (const raw of header.split(',')) {
    if (++elements > 64) break;
    const [nameRaw, ...params] = raw.split(';');
    const name = nameRaw.trim().toLowerCase();
    if (name === '') continue;
    let weight = 1;
    for (const p of params) {
      const m = /^\s*q\s*=\s*(0(?:\.\d{0,3})?|1(?:\.0{0,3})?)\s*$/i.exec(p);
      if (m !== null) weight = Number(m[1]);
      else if (/^\s*q\s*=/i.test(p)) weight = -1; // malformed q: skip the element
    }
    if (weight < 0) continue;
    // a coding named twice is ambiguous: the lower weight holds, so a q=0 anywhere refuses it (strict reading)
    const key = name === 'x-gzip' ? 'gzip' : name;
    if (key === '*') star = star < 0 ? weight : Math.min(star, weight);
    else q.set(key, Math.min(q.get(key) ?? weight, weight));
  }
  let best: Coding | null = null;
  let bestQ = 0;
  for (const c of offered) {
    const w = q.get(c) ?? (star >= 0 ? star : 0);
    if (w > bestQ) {
      best = c;
      bestQ = w;
    }
  }
  return best;
}
