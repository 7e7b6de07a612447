// A small authoritative DNS server for tests, on UDP loopback port 0, built on dns-packet: answers A, AAAA
// and SRV from records the test sets (and changes) at run time, or fails on purpose (SERVFAIL, NXDOMAIN, no
// answer at all). Every query is recorded and emitted, so a test waits for "the resolver asked again".
// It is a test peer, not a resolver: no recursion, no TCP, one question per query.
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { EventEmitter, once } from 'node:events';
import type { TestContext } from 'node:test';
import dnsPacket, { type Answer, type Question } from 'dns-packet';

export interface AddressRecord {
  address: string;
  /** Seconds (default 1). */
  ttl?: number;
}

export interface SrvRecord {
  target: string;
  port: number;
  priority?: number;
  weight?: number;
  ttl?: number;
}

export interface RecordSet {
  A?: AddressRecord[];
  AAAA?: AddressRecord[];
  SRV?: SrvRecord[];
}

/** answer: from the records (unknown name -> NXDOMAIN); servfail / nxdomain: that rcode to everything; drop: no reply. */
export type DnsMode = 'answer' | 'servfail' | 'nxdomain' | 'drop';

export interface SeenQuery {
  name: string;
  type: string;
  /** What the server did: an rcode name, or 'dropped'. */
  outcome: 'NOERROR' | 'NXDOMAIN' | 'SERVFAIL' | 'dropped';
  answers: number;
}

const RCODE = { NOERROR: 0, SERVFAIL: 2, NXDOMAIN: 3 } as const;

export class TestDnsServer extends EventEmitter {
  readonly port: number;
  readonly queries: SeenQuery[] = [];
  mode: DnsMode = 'answer';
  /** Replies wait this long (ms) in the server: a slow resolver. 0 = at once. */
  delayMs = 0;
  /** While true, replies wait until releaseReplies(): the test decides when the asker gets its answer. */
  holding = false;
  readonly #held: Array<() => void> = [];
  readonly #records = new Map<string, RecordSet>();
  readonly #socket: Socket;

  constructor(socket: Socket) {
    super();
    this.#socket = socket;
    this.port = socket.address().port;
    socket.on('message', (msg, rinfo) => this.#onMessage(msg, rinfo));
    socket.on('error', () => {}); // a reply to a resolver that went away is nothing to fail a test over
  }

  /** Sets (replaces) every record of `name`; an empty set makes the name exist with no data (NODATA). */
  set(name: string, records: RecordSet): void {
    this.#records.set(name.toLowerCase(), records);
  }

  delete(name: string): void {
    this.#records.delete(name.toLowerCase());
  }

  /** Resolves with the first query seen from now on that matches `predicate`; rejects after `timeoutMs`. */
  nextQuery(predicate: (q: SeenQuery) => boolean = () => true, timeoutMs = 15_000): Promise<SeenQuery> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off('query', onQuery);
        reject(new Error(`no matching DNS query within ${timeoutMs}ms (seen: ${JSON.stringify(this.queries.slice(-10))})`));
      }, timeoutMs);
      const onQuery = (q: SeenQuery): void => {
        if (!predicate(q)) return;
        clearTimeout(timer);
        this.off('query', onQuery);
        resolve(q);
      };
      this.on('query', onQuery);
    });
  }

  /** Stops holding and sends every held reply. */
  releaseReplies(): void {
    this.holding = false;
    for (const send of this.#held.splice(0)) send();
  }

  close(): void {
    try {
      this.#socket.close();
    } catch {
      // already closed
    }
  }

  #onMessage(msg: Buffer, rinfo: RemoteInfo): void {
    let query: dnsPacket.Packet;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      return;
    }
    const question: Question | undefined = query.questions?.[0];
    if (question === undefined) return;
    const name = question.name.toLowerCase();
    const seen = (outcome: SeenQuery['outcome'], answers: number): void => {
      const q: SeenQuery = { name, type: question.type, outcome, answers };
      this.queries.push(q);
      if (this.queries.length > 1000) this.queries.splice(0, 500);
      this.emit('query', q);
    };
    if (this.mode === 'drop') return seen('dropped', 0);
    let rcode: keyof typeof RCODE = 'NOERROR';
    let answers: Answer[] = [];
    const set = this.#records.get(name);
    if (this.mode === 'servfail') rcode = 'SERVFAIL';
    else if (this.mode === 'nxdomain' || set === undefined) rcode = 'NXDOMAIN';
    else answers = answersFor(name, question.type, set);
    const reply = dnsPacket.encode({
      type: 'response',
      id: query.id,
      flags: dnsPacket.AUTHORITATIVE_ANSWER | dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | RCODE[rcode],
      questions: [question],
      answers,
    });
    const send = (): void => {
      try {
        this.#socket.send(reply, rinfo.port, rinfo.address);
      } catch {
        // closed meanwhile (the test ended): nobody waits for this reply
      }
    };
    if (this.holding) this.#held.push(send);
    else if (this.delayMs > 0) setTimeout(send, this.delayMs).unref();
    else send();
    seen(rcode, answers.length);
  }
}

function answersFor(name: string, type: string, set: RecordSet): Answer[] {
  switch (type) {
    case 'A':
      return (set.A ?? []).map((r) => ({ type: 'A', name, ttl: r.ttl ?? 1, class: 'IN', data: r.address }));
    case 'AAAA':
      return (set.AAAA ?? []).map((r) => ({ type: 'AAAA', name, ttl: r.ttl ?? 1, class: 'IN', data: r.address }));
    case 'SRV':
      return (set.SRV ?? []).map((r) => ({
        type: 'SRV',
        name,
        ttl: r.ttl ?? 1,
        class: 'IN',
        data: { priority: r.priority ?? 10, weight: r.weight ?? 10, port: r.port, target: r.target },
      }));
    default:
      return [];
  }
}

/** A DNS server on 127.0.0.1 (UDP, port 0), closed after the test. */
export async function startDnsServer(t: TestContext): Promise<TestDnsServer> {
  const socket = createSocket('udp4');
  socket.bind(0, '127.0.0.1');
  await once(socket, 'listening');
  const server = new TestDnsServer(socket);
  t.after(() => server.close());
  return server;
}
