// A second Portico beside a running one: refused before it binds anything when a port it would listen on is
// taken (SO_REUSEPORT would let it share the port and take part of the traffic) or when its config file is
// already being run (it would take the pid file). The refusal is one line naming the port and the process.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { stringify } from 'yaml';
import type { ConfigInput } from '../../src/config/schema.js';
import { startHttpBackend } from '../helpers/backends.js';
import { request } from '../helpers/clients.js';
import { CLI, ROOT } from '../helpers/paths.js';
import { startPortico } from '../helpers/portico.js';

function config(address: string, backendPort: number): ConfigInput {
  return { workers: 2, listeners: [{ address }], upstreams: { app: { targets: [`127.0.0.1:${backendPort}`] } }, routes: [{ match: { path: '/' }, proxy: 'app' }] };
}

interface Outcome {
  /** Exit code, or 'started' when it came up (then it was killed). */
  result: number | 'started';
  stderr: string;
  stdout: string;
}

/** Runs `portico start -c FILE` until it exits or says it is listening (then kills its process group). */
async function startSecond(t: TestContext, configPath: string, env: NodeJS.ProcessEnv = {}): Promise<Outcome> {
  const child = spawn(process.execPath, [CLI, 'start', '-c', configPath], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const killGroup = () => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  t.after(killGroup);
  let stdout = '';
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  return new Promise<Outcome>((resolve) => {
    const timer = setTimeout(() => {
      killGroup();
      resolve({ result: 'started', stdout, stderr: `${stderr}\n(no exit within 20 s)` });
    }, 20_000);
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      stdout += s;
      if (/"msg":"listening"/.test(stdout)) {
        clearTimeout(timer);
        killGroup();
        resolve({ result: 'started', stdout, stderr });
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ result: code ?? -1, stdout, stderr });
    });
  });
}

async function tempConfig(t: TestContext, config: ConfigInput): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'portico-second-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'second.yaml');
  await writeFile(file, stringify(config));
  return file;
}

const lastLine = (text: string) => text.trim().split('\n').at(-1) ?? '';

test('a second Portico on a port the first listens on is refused with one line naming the port and the process', { timeout: 90_000 }, async (t) => {
  const backend = await startHttpBackend(t);
  const first = await startPortico(t, config('127.0.0.1:0', backend.port));
  const port = first.httpPort;
  const pidFile = path.join(first.dir, '.state', 'portico.pid');
  const pidBefore = await readFile(pidFile, 'utf8');
  for (const host of ['127.0.0.1', '0.0.0.0']) {
    const second = await startSecond(t, await tempConfig(t, config(`${host}:${port}`, backend.port)));
    assert.equal(second.result, 1, `${host}:${port}: ${second.stderr}`);
    const line = lastLine(second.stderr);
    assert.match(line, new RegExp(`^portico: cannot listen on ${host.replace(/\./g, '\\.')}:${port}: EADDRINUSE: port ${port} is already in use at 127\\.0\\.0\\.1:${port} by pid \\d+ \\([^)]*(worker|cli|portico)[^)]*\\)`), line);
    assert.doesNotMatch(second.stdout, /"msg":"worker started"/, 'no worker was started');
  }
  // The first goes on serving, with its pid file.
  assert.equal((await request(`http://127.0.0.1:${port}/`)).status, 200);
  assert.equal(await readFile(pidFile, 'utf8'), pidBefore);
});

test('a second Portico on the config file a running one serves is refused; the first keeps its pid file', { timeout: 60_000 }, async (t) => {
  const backend = await startHttpBackend(t);
  const first = await startPortico(t, config('127.0.0.1:0', backend.port));
  const pidFile = path.join(first.dir, '.state', 'portico.pid');
  assert.equal((await readFile(pidFile, 'utf8')).trim(), String(first.pid));
  const second = await startSecond(t, first.configPath);
  assert.equal(second.result, 1, second.stderr);
  assert.match(lastLine(second.stderr), new RegExp(`^portico: another Portico \\(pid ${first.pid}\\) is running .*portico\\.yaml \\(pid file .*portico\\.pid\\): stop it first`));
  assert.equal((await readFile(pidFile, 'utf8')).trim(), String(first.pid), 'the pid file still names the first');
  assert.equal((await request(`http://127.0.0.1:${first.httpPort}/`)).status, 200);
});

test('a port held by another program: refused naming it; during a hand-over its bind error is one plain EADDRINUSE line', { timeout: 60_000 }, async (t) => {
  const backend = await startHttpBackend(t);
  const holder = net.createServer((s) => s.destroy());
  t.after(() => new Promise<void>((resolve) => holder.close(() => resolve())));
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
  const port = (holder.address() as AddressInfo).port;
  const file = await tempConfig(t, config(`127.0.0.1:${port}`, backend.port));

  const refused = await startSecond(t, file);
  assert.equal(refused.result, 1, refused.stderr);
  assert.match(lastLine(refused.stderr), new RegExp(`^portico: cannot listen on 127\\.0\\.0\\.1:${port}: EADDRINUSE: port ${port} is already in use at 127\\.0\\.0\\.1:${port} by pid ${process.pid} \\(`));

  // Handing over from this process: its socket is no conflict for the check, so the bind itself fails.
  const bindFails = await startSecond(t, file, { PORTICO_HANDOVER_FROM: String(process.pid) });
  assert.notEqual(bindFails.result, 0, bindFails.stderr);
  assert.notEqual(bindFails.result, 'started');
  const line = lastLine(bindFails.stderr);
  assert.match(line, new RegExp(`^portico: worker \\d could not start: cannot listen on 127\\.0\\.0\\.1:${port}: EADDRINUSE \\(address already in use\\)$`), line);
  assert.doesNotMatch(line, /see its error above/);
});
