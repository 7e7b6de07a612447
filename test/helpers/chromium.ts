// Headless Chromium driven over the DevTools protocol (CDP) with the `ws` client: no Playwright, no download.
// Starts the Debian `chromium` with a throwaway profile, learns the DevTools URL from stderr, opens pages and
// evaluates scripts in them. Every wait is bounded; the browser's process group is killed in t.after.
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { WebSocket } from 'ws';
import { hasCommand } from './peers.js';

export const CHROMIUM = 'chromium';

export function hasChromium(): boolean {
  return hasCommand(CHROMIUM, ['--version']);
}

interface CdpReply {
  id?: number;
  method?: string;
  sessionId?: string;
  params?: Record<string, unknown>;
  result?: Record<string, unknown>;
  error?: { code: number; message: string };
}

export interface Page {
  /** Evaluates `expression` in the page (promises awaited) and returns its JSON value; page exceptions reject. */
  evaluate<T>(expression: string, timeoutMs?: number): Promise<T>;
  /** Uncaught exceptions, console.error calls and browser log errors (failed loads, CSP refusals) so far. */
  readonly errors: readonly string[];
  /** Writes a PNG of the visible page to `file`. */
  screenshot(file: string): Promise<void>;
}

export interface Browser {
  /** Opens `url` in a new tab and resolves once its load event fired. */
  open(url: string, timeoutMs?: number): Promise<Page>;
}

const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
  // The e2e listener serves the test's self-signed certificate.
  '--ignore-certificate-errors',
  '--remote-debugging-address=127.0.0.1',
  '--remote-debugging-port=0',
];

export async function launchChromium(t: TestContext, startTimeoutMs = 30_000): Promise<Browser> {
  const profile = await mkdtemp(path.join(tmpdir(), 'portico-chromium-'));
  const child = spawn(CHROMIUM, [...FLAGS, `--user-data-dir=${profile}`, 'about:blank'], {
    stdio: ['ignore', 'ignore', 'pipe'],
    detached: true, // its own process group: renderer and GPU helpers die with it
  });
  let stderr = '';
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  t.after(async () => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
    await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 5_000).unref())]);
    await rm(profile, { recursive: true, force: true });
  });

  const wsUrl = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`chromium printed no DevTools URL within ${startTimeoutMs} ms:\n${stderr.slice(-2000)}`)), startTimeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`chromium exited (${code}) before DevTools was ready:\n${stderr.slice(-2000)}`));
    });
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (s: string) => {
      stderr = (stderr + s).slice(-32 * 1024);
      const m = /DevTools listening on (ws:\/\/\S+)/.exec(stderr);
      if (m !== null) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
  });

  const cdp = await Cdp.connect(wsUrl);
  t.after(() => cdp.close());
  return {
    async open(url, timeoutMs = 20_000) {
      const { targetId } = (await cdp.send('Target.createTarget', { url: 'about:blank' })) as { targetId: string };
      const { sessionId } = (await cdp.send('Target.attachToTarget', { targetId, flatten: true })) as { sessionId: string };
      await cdp.send('Page.enable', {}, sessionId);
      const errors: string[] = [];
      cdp.on(sessionId, (method, params) => {
        if (method === 'Runtime.exceptionThrown') {
          const d = params.exceptionDetails as { text?: string; exception?: { description?: string } } | undefined;
          errors.push(`exception: ${d?.exception?.description ?? d?.text ?? 'unknown'}`);
        } else if (method === 'Runtime.consoleAPICalled' && params.type === 'error') {
          errors.push(`console.error: ${JSON.stringify(params.args)}`);
        } else if (method === 'Log.entryAdded') {
          const e = params.entry as { level?: string; text?: string; url?: string } | undefined;
          if (e?.level === 'error') errors.push(`log: ${e.text ?? ''} ${e.url ?? ''}`);
        }
      });
      await cdp.send('Runtime.enable', {}, sessionId);
      await cdp.send('Log.enable', {}, sessionId);
      const loaded = cdp.waitEvent('Page.loadEventFired', sessionId, timeoutMs);
      const nav = (await cdp.send('Page.navigate', { url }, sessionId)) as { errorText?: string };
      if (nav.errorText !== undefined && nav.errorText !== '') throw new Error(`chromium could not open ${url}: ${nav.errorText}`);
      await loaded;
      return {
        async evaluate<T>(expression: string, evalTimeoutMs = 20_000): Promise<T> {
          const r = (await cdp.send('Runtime.evaluate', { expression, awaitPromise: true, returnByValue: true }, sessionId, evalTimeoutMs)) as {
            result: { value?: unknown };
            exceptionDetails?: { text: string; exception?: { description?: string } };
          };
          if (r.exceptionDetails !== undefined) throw new Error(`page script failed: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
          return r.result.value as T;
        },
        errors,
        async screenshot(file: string): Promise<void> {
          const r = (await cdp.send('Page.captureScreenshot', { format: 'png' }, sessionId)) as { data: string };
          await writeFile(file, Buffer.from(r.data, 'base64'));
        },
      };
    },
  };
}

/** A minimal CDP client: numbered commands with replies, and events matched by method and session. */
class Cdp {
  #ws: WebSocket;
  #nextId = 1;
  #pending = new Map<number, { resolve: (r: Record<string, unknown>) => void; reject: (e: Error) => void }>();
  #eventWaiters = new Set<{ method: string; sessionId: string | undefined; resolve: () => void }>();
  #listeners = new Map<string, (method: string, params: Record<string, unknown>) => void>();

  /** Every event of `sessionId` goes to `fn` (one listener per session). */
  on(sessionId: string, fn: (method: string, params: Record<string, unknown>) => void): void {
    this.#listeners.set(sessionId, fn);
  }

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    ws.on('message', (data) => this.#onMessage(JSON.parse(String(data)) as CdpReply));
    ws.on('close', () => {
      for (const p of this.#pending.values()) p.reject(new Error('DevTools connection closed'));
      this.#pending.clear();
    });
  }

  static connect(url: string): Promise<Cdp> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 256 * 1024 * 1024 });
      ws.once('error', reject);
      ws.once('open', () => {
        ws.off('error', reject);
        ws.on('error', () => ws.terminate());
        resolve(new Cdp(ws));
      });
    });
  }

  send(method: string, params: Record<string, unknown>, sessionId?: string, timeoutMs = 20_000): Promise<Record<string, unknown>> {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`CDP ${method} got no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, {
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.#ws.send(JSON.stringify(sessionId === undefined ? { id, method, params } : { id, method, params, sessionId }));
    });
  }

  waitEvent(method: string, sessionId: string | undefined, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const waiter = {
        method,
        sessionId,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      const timer = setTimeout(() => {
        this.#eventWaiters.delete(waiter);
        reject(new Error(`CDP event ${method} did not come within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#eventWaiters.add(waiter);
    });
  }

  close(): void {
    this.#ws.terminate();
  }

  #onMessage(msg: CdpReply): void {
    if (msg.id !== undefined) {
      const p = this.#pending.get(msg.id);
      if (p === undefined) return;
      this.#pending.delete(msg.id);
      if (msg.error !== undefined) p.reject(new Error(`CDP error ${msg.error.code}: ${msg.error.message}`));
      else p.resolve(msg.result ?? {});
      return;
    }
    if (msg.method !== undefined && msg.sessionId !== undefined) this.#listeners.get(msg.sessionId)?.(msg.method, msg.params ?? {});
    for (const w of this.#eventWaiters) {
      if (w.method === msg.method && w.sessionId === msg.sessionId) {
        this.#eventWaiters.delete(w);
        w.resolve();
      }
    }
  }
}

/** What demoPageExchange returns from the demo page (src/cli/demo.ts). */
export interface DemoPageResult {
  state: string;
  url: string;
  echoes: string[];
  headers: Record<string, string>;
}

/** Runs in the demo page: waits for the socket to open, sends each message through the form, waits for all echoes. */
export function demoPageExchange(messages: string[]): string {
  return `(async () => {
    const until = async (what, cond, ms) => {
      const end = Date.now() + ms;
      while (!cond()) {
        if (Date.now() > end) throw new Error('timed out waiting for ' + what + '; state=' + document.getElementById('state').textContent + ' log=' + document.getElementById('log').textContent);
        await new Promise((r) => setTimeout(r, 25));
      }
    };
    const echoes = () => [...document.querySelectorAll('#log .echo')].map((li) => li.textContent);
    await until('open', () => document.getElementById('state').dataset.state === 'open', 15000);
    const messages = ${JSON.stringify(messages)};
    for (const m of messages) {
      document.getElementById('message').value = m;
      document.getElementById('send-button').click();
    }
    await until('echoes', () => echoes().length >= messages.length, 15000);
    const headers = {};
    for (const td of document.querySelectorAll('[data-header]')) headers[td.dataset.header] = td.textContent;
    return { state: document.getElementById('state').dataset.state, url: document.getElementById('url').textContent, echoes: echoes(), headers };
  })()`;
}
