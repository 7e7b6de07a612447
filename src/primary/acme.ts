// Automatic certificates (`listeners[].tls.acme`, config/acme.ts), Caddy-style, ordered by the primary once for
// the whole instance with the well-kept `acme-client` (RFC 8555). A listener starts on a self-signed placeholder
// (load.ts marks the managed certificate self_signed) and serves the CA's certificate as soon as it is issued;
// renewal starts `renew_before` its expiry. HTTP-01 tokens go to every worker over IPC and are answered on the
// plain listeners (http/connection.ts); TLS-ALPN-01 challenge certificates (RFC 8737) made here go the same way
// and are served by the TLS listeners to `acme-tls/1` handshakes (accept/acme-alpn.ts). The CA is told to validate
// only once every worker has confirmed it holds the challenge, and a worker that starts while one is pending (a
// restart) gets it at boot. Certificates and account keys stay in the state folder; a new one is
// written atomically and the workers rebuild their TLS contexts from the files (open connections keep theirs).
// A failed order is logged and retried with backoff; whatever served before keeps serving.
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import https from 'node:https';
import path from 'node:path';
import { acmeAccountFile, acmeFiles, type AcmeConfig } from '../config/acme.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../core/log.js';
import type { ToWorker } from '../worker/ipc.js';

/**
 * acme-client (with axios) is loaded on the first order, not at start: it costs ~27 MiB and ~0.6 s of the
 * primary's start, which a config without ACME should not pay.
 */
let acmeClient: Promise<typeof import('acme-client')> | undefined;
const loadAcme = (): Promise<typeof import('acme-client')> => (acmeClient ??= import('acme-client'));

/** Checks of a certificate that is not due: at least this often (a CA may revoke, a clock may jump). */
const CHECK_EVERY_MS = 12 * 3_600_000;
/** After a failed order: the first retry, doubling up to the last (CAs rate-limit failures). */
const RETRY_MIN_MS = 60_000;
const RETRY_MAX_MS = 3_600_000;
/** A whole order (every request and the CA's processing) ends by then, failed if not done: nothing hangs for good. */
const ORDER_DEADLINE_MS = 10 * 60_000;
/** The largest answer taken from the CA (a certificate chain is a few KiB). */
const MAX_ANSWER_BYTES = 1024 * 1024;
/** How long the CA's validation waits for every worker to confirm a challenge (a stalled worker does not hold it longer). */
const DELIVERY_TIMEOUT_MS = 10_000;
/** Clock skew allowed between the CA and this machine for a certificate's start. */
const SKEW_MS = 3_600_000;
/** After an issue, the next check waits at least this long (a CA whose certificates live less than renew_before). */
const REORDER_FLOOR_MS = 5 * 60_000;

/** The IPC messages that put a challenge in force on the workers or end it. */
type ChallengeMessage = Extract<ToWorker, { type: 'acme-challenge' | 'acme-alpn-challenge' }>;

export interface AcmeHooks {
  /** Sends a message to every worker (challenge tokens and TLS-ALPN-01 certificates). */
  broadcast(msg: ToWorker): void;
  /**
   * Resolves once every serving worker has handled what was broadcast before (bounded by `timeoutMs`), with the
   * ids of those that did not confirm in time.
   */
  delivered(timeoutMs: number): Promise<number[]>;
  /** New certificate files are in place: workers rebuild their TLS contexts from them. */
  refresh(): void;
}

interface Managed {
  readonly key: string;
  readonly acme: AcmeConfig;
  readonly files: { dir: string; cert: string; key: string };
  timer: NodeJS.Timeout | undefined;
  ordering: boolean;
  failures: number;
}

/** What the certificate file holds now, for the due check and the log. */
interface Held {
  readonly issued: boolean;
  readonly notAfter: Date;
  readonly serial: string;
  readonly names: readonly string[];
}

export class AcmeManager {
  readonly #log: Logger;
  readonly #configDir: string;
  readonly #hooks: AcmeHooks;
  readonly #managed = new Map<string, Managed>();
  /** The challenges in force (by HTTP-01 token or TLS-ALPN-01 name), for workers that start while they are. */
  readonly #live = new Map<string, ChallengeMessage>();
  #stopped = false;

  constructor(log: Logger, configFile: string, hooks: AcmeHooks) {
    this.#log = log;
    this.#configDir = path.dirname(path.resolve(configFile));
    this.#hooks = hooks;
  }

  /** The listeners of `config` that use ACME: new ones are checked now, removed ones forgotten (at start and each reload). */
  update(config: Config): void {
    const seen = new Set<string>();
    for (const l of config.listeners) {
      const a = l.tls?.acme;
      if (a === undefined) continue;
      const key = JSON.stringify([a.domains, a.directory, a.email ?? null, a.challenge]);
      seen.add(key);
      const existing = this.#managed.get(key);
      if (existing !== undefined) {
        // a reload: look again now (the files may have been replaced by hand)
        if (!existing.ordering) this.#schedule(existing, 0);
        continue;
      }
      const m: Managed = { key, acme: a, files: acmeFiles(this.#configDir, a), timer: undefined, ordering: false, failures: 0 };
      this.#managed.set(key, m);
      this.#schedule(m, 0);
    }
    for (const [key, m] of this.#managed) {
      if (seen.has(key)) continue;
      clearTimeout(m.timer);
      this.#managed.delete(key);
    }
  }

  /** The challenge messages in force, for a worker that has just booted (sent before its first apply). */
  pending(): ChallengeMessage[] {
    return [...this.#live.values()];
  }

  /**
   * Puts a challenge in force (`msg` holds it) or ends it (`msg` clears it) on every worker, now and later. An end
   * of one not in force (the order's own removal came first) is not sent again.
   */
  #challenge(msg: ChallengeMessage): void {
    const key = msg.type === 'acme-challenge' ? `http-01 ${msg.token}` : `tls-alpn-01 ${msg.name}`;
    if (msg.type === 'acme-challenge' ? msg.keyAuthorization !== null : msg.cert !== null) this.#live.set(key, msg);
    else if (!this.#live.delete(key)) return;
    this.#hooks.broadcast(msg);
  }

  stop(): void {
    this.#stopped = true;
    for (const m of this.#managed.values()) clearTimeout(m.timer);
  }

  #schedule(m: Managed, delayMs: number): void {
    clearTimeout(m.timer);
    if (this.#stopped) return;
    m.timer = setTimeout(() => void this.#check(m), Math.min(delayMs, 2 ** 31 - 1));
    m.timer.unref();
  }

  async #check(m: Managed): Promise<void> {
    if (this.#stopped || m.ordering || this.#managed.get(m.key) !== m) return;
    const held = await readHeld(m.files.cert);
    const renewAt = held === undefined ? 0 : held.notAfter.getTime() - m.acme.renew_before;
    const covers = held !== undefined && m.acme.domains.every((d) => held.names.includes(d));
    if (held !== undefined && held.issued && covers && renewAt > Date.now()) {
      this.#schedule(m, Math.min(renewAt - Date.now(), CHECK_EVERY_MS));
      return;
    }
    m.ordering = true;
    const reason = held === undefined || !held.issued ? 'first certificate' : !covers ? 'the domains changed' : 'renewal';
    this.#log.info({ domains: m.acme.domains, directory: m.acme.directory, reason }, 'acme: ordering a certificate');
    try {
      const issued = await this.#order(m);
      m.failures = 0;
      this.#log.info({ domains: m.acme.domains, notAfter: issued.notAfter.toISOString(), serial: issued.serial, reason }, 'acme: certificate issued');
      this.#hooks.refresh();
      const due = issued.notAfter.getTime() - m.acme.renew_before - Date.now();
      if (due < REORDER_FLOOR_MS) this.#log.warn({ domains: m.acme.domains, notAfter: issued.notAfter.toISOString(), renewBeforeMs: m.acme.renew_before }, 'acme: the CA\'s certificates live less than renew_before: set renew_before lower (renewing at most every 5 minutes meanwhile)');
      this.#schedule(m, Math.min(Math.max(due, REORDER_FLOOR_MS), CHECK_EVERY_MS));
    } catch (err) {
      m.failures++;
      const retryMs = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** (m.failures - 1));
      this.#log.error({ err: { message: orderFailure(err, m.acme) }, domains: m.acme.domains, retryInMs: retryMs, serving: held?.issued === true ? 'the previous certificate' : 'the placeholder' }, 'acme: order failed');
      this.#schedule(m, retryMs);
    } finally {
      m.ordering = false;
    }
  }

  async #order(m: Managed): Promise<Held> {
    const a = m.acme;
    // the directory's own HTTPS: public roots, or the CA given for a private ACME server (module-wide in acme-client)
    const acme = await loadAcme();
    acme.axios.defaults.httpsAgent = a.directory_ca === undefined ? undefined : new https.Agent({ ca: await readFile(a.directory_ca) });
    acme.axios.defaults.timeout = a.request_timeout;
    acme.axios.defaults.maxContentLength = MAX_ANSWER_BYTES;
    acme.axios.defaults.maxBodyLength = MAX_ANSWER_BYTES;
    const client = new acme.Client({ directoryUrl: a.directory, accountKey: await this.#accountKey(a) });
    const [key, csr] = await acme.crypto.createCsr({ commonName: a.domains[0], altNames: [...a.domains] }, await acme.crypto.createPrivateEcdsaKey());
    const tokens: string[] = [];
    const alpnNames: string[] = [];
    let pem: string;
    let deadline: NodeJS.Timeout | undefined;
    try {
      const overdue = new Promise<never>((_, reject) => {
        deadline = setTimeout(() => reject(new Error(`the order took longer than ${ORDER_DEADLINE_MS / 60_000} min`)), ORDER_DEADLINE_MS);
      });
      const order = client.auto({
        csr,
        email: a.email,
        termsOfServiceAgreed: true,
        challengePriority: [...a.challenge],
        // Portico answers the token itself: fetching it back through the public name proves nothing more
        skipChallengeVerification: true,
        challengeCreateFn: async (authz, challenge, keyAuthorization) => {
          // acme-client 5.4's types list http-01 and dns-01 only; the CA's answer may name tls-alpn-01 (RFC 8737)
          if (isTlsAlpn(challenge)) {
            // RFC 8737 §3: a self-signed certificate for the name holding SHA-256(keyAuthorization) in the
            // critical acmeIdentifier extension; EC P-256 keeps the key quick to make and small on the wire.
            // acme-client gives it keyUsage keyCertSign only, so OpenSSL serves it over TLS 1.3 alone (no
            // digitalSignature for a TLS 1.2 ECDHE exchange): CAs validate over TLS 1.3, which every listener offers.
            const name = authz.identifier.value;
            const [key, cert] = await acme.crypto.createAlpnCertificate(authz, keyAuthorization, await acme.crypto.createPrivateEcdsaKey());
            alpnNames.push(name);
            this.#challenge({ type: 'acme-alpn-challenge', name, cert: cert.toString(), key: key.toString() });
          } else {
            tokens.push(challenge.token);
            this.#challenge({ type: 'acme-challenge', token: challenge.token, keyAuthorization });
          }
          // acme-client tells the CA to validate when this returns: every worker must answer by then
          const unconfirmed = await this.#hooks.delivered(DELIVERY_TIMEOUT_MS);
          if (unconfirmed.length > 0) this.#log.warn({ domain: authz.identifier.value, workers: unconfirmed, waitedMs: DELIVERY_TIMEOUT_MS }, 'acme: some workers did not confirm the challenge in time: the CA validates anyway');
          this.#log.info({ domain: authz.identifier.value, challenge: challenge.type }, 'acme: challenge ready');
        },
        challengeRemoveFn: async (authz, challenge) => {
          if (isTlsAlpn(challenge)) this.#challenge({ type: 'acme-alpn-challenge', name: authz.identifier.value, cert: null, key: null });
          else this.#challenge({ type: 'acme-challenge', token: challenge.token, keyAuthorization: null });
        },
      });
      order.catch(() => undefined); // past the deadline its own failure has no one to tell
      pem = await Promise.race([order, overdue]);
    } finally {
      clearTimeout(deadline);
      // what the order's own removal did not end (it failed or ran out of time first)
      for (const token of tokens) this.#challenge({ type: 'acme-challenge', token, keyAuthorization: null });
      for (const name of alpnNames) this.#challenge({ type: 'acme-alpn-challenge', name, cert: null, key: null });
    }
    const held = checkIssued(typeof pem === 'string' ? pem : String(pem), key, a.domains, Date.now());
    // key first, then the certificate: a reader that sees the new certificate finds its key
    await mkdir(m.files.dir, { recursive: true, mode: 0o700 });
    await writeAtomically(m.files.key, key, 0o600);
    await writeAtomically(m.files.cert, Buffer.from(pem), 0o644);
    return held;
  }

  /** One account key per directory and contact, made on first use and kept (a CA ties orders and limits to it). */
  async #accountKey(a: AcmeConfig): Promise<Buffer> {
    const file = acmeAccountFile(this.#configDir, a.directory, a.email);
    try {
      return await readFile(file);
    } catch {
      const key = await (await loadAcme()).crypto.createPrivateEcdsaKey();
      await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
      await writeAtomically(file, key, 0o600);
      this.#log.info({ directory: a.directory, file }, 'acme: created an account key');
      return key;
    }
  }
}

function isTlsAlpn(challenge: { type: string }): boolean {
  return challenge.type === 'tls-alpn-01';
}

/**
 * Why an order failed, for the log. acme-client 5.4 loses a request that got no answer at all (connection refused
 * or reset, request_timeout passed) in its own retry interceptor, which then throws a TypeError about `config`:
 * that is said plainly instead.
 */
function orderFailure(err: unknown, a: AcmeConfig): string {
  const message = err instanceof Error ? err.message : String(err);
  if (err instanceof TypeError && message.includes("reading 'config'")) {
    return `no answer from the CA at ${new URL(a.directory).host} (connection refused or reset, or no answer within request_timeout ${a.request_timeout} ms)`;
  }
  return message;
}

async function readHeld(file: string): Promise<Held | undefined> {
  try {
    return describe(await readFile(file, 'utf8'));
  } catch {
    return undefined;
  }
}

/**
 * What a CA answered, checked before anything is written: a PEM certificate for this order's key (a CA that
 * answers another one's certificate would leave the workers with a pair that cannot serve), valid now (within
 * SKEW_MS for its start), naming every domain. Throws with the reason.
 */
export function checkIssued(pem: string, key: Buffer | string, domains: readonly string[], now: number): Held {
  let x: X509Certificate;
  try {
    x = new X509Certificate(pem);
  } catch {
    throw new Error('the CA answered something that is not a PEM certificate');
  }
  if (!x.checkPrivateKey(createPrivateKey(key))) throw new Error('the issued certificate is not for the key of this order');
  if (new Date(x.validFrom).getTime() > now + SKEW_MS) throw new Error(`the issued certificate is not valid before ${x.validFrom}`);
  if (new Date(x.validTo).getTime() <= now) throw new Error(`the issued certificate expired on ${x.validTo}`);
  const held = describe(pem)!;
  if (!domains.every((d) => held.names.includes(d))) throw new Error(`the issued certificate does not name ${domains.join(', ')}`);
  return held;
}

/** The leaf of a PEM chain: self-signed (the placeholder) or issued, its expiry, serial and DNS names. */
function describe(pem: string): Held | undefined {
  let x: X509Certificate;
  try {
    x = new X509Certificate(pem);
  } catch {
    return undefined;
  }
  const names = (x.subjectAltName ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.startsWith('DNS:'))
    .map((s) => s.slice(4).toLowerCase());
  return { issued: x.issuer !== x.subject, notAfter: new Date(x.validTo), serial: x.serialNumber, names };
}

async function writeAtomically(file: string, data: Buffer, mode: number): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    await writeFile(tmp, data, { mode });
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}
