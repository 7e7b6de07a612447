// deploy/ as the CI machine can check it without a systemd, a Docker daemon or a cluster: the systemd unit passes
// `systemd-analyze verify` with no warning and keeps its operating promises; the Dockerfile is parsed and held to
// hadolint-style rules written here (hadolint is not in Debian); the Kubernetes manifests pass yamllint and
// agree with each other (selectors, named ports, probes, grace period) and with the config they carry, which
// `portico check` accepts, as it accepts the image's config.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { formatErrors, loadConfig, loadConfigText } from '../../src/config/load.js';
import { parseDuration } from '../../src/config/schema.js';
import { ROOT } from '../helpers/paths.js';
import { hasCommand, needPeer } from '../helpers/peers.js';
import { TEST_CERT, TEST_KEY } from '../helpers/portico.js';

const DEPLOY = path.join(ROOT, 'deploy');

// ---- systemd ----

/** `Key=value` lines of a unit file by section ("Service.ExecReload"); repeated keys keep every value. */
function unitKeys(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const s = /^\[(\w+)\]$/.exec(line);
    if (s !== null) {
      section = s[1];
      continue;
    }
    const eq = line.indexOf('=');
    const key = `${section}.${line.slice(0, eq)}`;
    out.set(key, [...(out.get(key) ?? []), line.slice(eq + 1)]);
  }
  return out;
}

test('systemd unit: systemd-analyze verify says nothing, and the unit reloads, drains, holds fds and binds 443 without root', (t) => {
  const unit = path.join(DEPLOY, 'systemd', 'portico.service');
  if (needPeer(t, 'systemd-analyze', hasCommand('systemd-analyze', ['--version']))) {
    const r = spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 0, r.stderr);
    // unknown keys and bad values are only warnings: any output is a finding
    assert.equal(r.stderr.trim(), '', `systemd-analyze verify:\n${r.stderr}`);
  }
  const k = unitKeys(readFileSync(unit, 'utf8'));
  const one = (key: string): string => {
    const v = k.get(key);
    assert.ok(v !== undefined && v.length === 1, `${key} is set once`);
    return v[0];
  };
  assert.match(one('Service.ExecStart'), /bin\/portico\.js start -c \S+\.yaml$/);
  assert.match(one('Service.ExecStartPre'), /bin\/portico\.js check -c \S+\.yaml$/);
  assert.equal(one('Service.ExecReload'), '/bin/kill -HUP $MAINPID', 'reload = SIGHUP to the primary');
  assert.equal(one('Service.KillSignal'), 'SIGTERM');
  const stop = parseDuration(one('Service.TimeoutStopSec'));
  assert.ok(stop !== undefined && stop > 30_000, 'the stop timeout outlasts the default shutdown_grace (30s)');
  assert.ok(Number(one('Service.LimitNOFILE')) >= 65536);
  assert.equal(one('Service.AmbientCapabilities'), 'CAP_NET_BIND_SERVICE');
  assert.equal(one('Service.CapabilityBoundingSet'), 'CAP_NET_BIND_SERVICE');
  assert.notEqual(one('Service.User'), 'root');
  assert.equal(one('Service.NoNewPrivileges'), 'yes');
  assert.equal(one('Service.ProtectSystem'), 'strict');
  assert.equal(k.get('Service.MemoryDenyWriteExecute'), undefined, 'V8 needs W+X memory');
});

// ---- Dockerfile ----

const INSTRUCTIONS = new Set(['FROM', 'RUN', 'CMD', 'LABEL', 'EXPOSE', 'ENV', 'ADD', 'COPY', 'ENTRYPOINT', 'VOLUME', 'USER', 'WORKDIR', 'ARG', 'ONBUILD', 'STOPSIGNAL', 'HEALTHCHECK', 'SHELL']);

type Instruction = { op: string; args: string; line: number };

/** Instructions with continuation lines joined and comments dropped. */
function dockerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  let current: Instruction | null = null;
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (current === null && (line === '' || line.startsWith('#'))) return;
    if (current !== null && line.startsWith('#')) return;
    const body = line.endsWith('\\') ? line.slice(0, -1).trim() : line;
    if (current === null) {
      const m = /^(\w+)\s+(.*)$/.exec(body);
      assert.ok(m !== null, `Dockerfile:${i + 1}: not an instruction: ${line}`);
      current = { op: m[1].toUpperCase(), args: m[2], line: i + 1 };
    } else {
      current.args += ` ${body}`;
    }
    if (!line.endsWith('\\')) {
      out.push(current);
      current = null;
    }
  });
  return out;
}

test('Dockerfile: multi-stage, pinned bases, addon built, non-root, healthcheck on the admin listener, clean apt, sources that exist', (t) => {
  const file = path.join(DEPLOY, 'Dockerfile');
  const ins = dockerfile(readFileSync(file, 'utf8'));
  for (const i of ins) assert.ok(INSTRUCTIONS.has(i.op), `Dockerfile:${i.line}: unknown instruction ${i.op}`);
  const froms = ins.filter((i) => i.op === 'FROM');
  assert.ok(froms.length >= 2, 'multi-stage');
  const stages: string[] = [];
  for (const f of froms) {
    const [image, as, name] = f.args.split(/\s+/);
    assert.match(image, /^[\w./-]+:[\w.-]+$/, `Dockerfile:${f.line}: base image with a tag`);
    assert.doesNotMatch(image, /:latest$/, `Dockerfile:${f.line}: no :latest`);
    if (as !== undefined) stages.push(name);
  }
  const final = ins.slice(ins.lastIndexOf(froms[froms.length - 1]));
  for (const i of ins) {
    assert.notEqual(i.op, 'ADD', `Dockerfile:${i.line}: COPY, not ADD`);
    assert.doesNotMatch(i.args, /\bsudo\b/, `Dockerfile:${i.line}: no sudo`);
    if (i.op === 'RUN' && /apt-get install/.test(i.args)) {
      assert.match(i.args, /apt-get update/, `Dockerfile:${i.line}: update and install in one layer`);
      assert.match(i.args, /--no-install-recommends/, `Dockerfile:${i.line}: --no-install-recommends`);
      assert.match(i.args, /-y\b/, `Dockerfile:${i.line}: -y`);
      assert.match(i.args, /rm -rf \/var\/lib\/apt\/lists/, `Dockerfile:${i.line}: apt lists removed in the same layer`);
    }
    if (i.op === 'COPY') {
      const words = i.args.split(/\s+/);
      const from = words.find((w) => w.startsWith('--from='));
      const sources = words.filter((w) => !w.startsWith('--')).slice(0, -1);
      if (from !== undefined) assert.ok(stages.includes(from.slice(7)), `Dockerfile:${i.line}: --from names a stage`);
      else for (const s of sources) assert.ok(existsSync(path.join(ROOT, s)), `Dockerfile:${i.line}: ${s} exists in the repository`);
    }
  }
  assert.ok(ins.some((i) => i.op === 'RUN' && /portico_native\.node/.test(i.args)), 'the build stage checks the addon was built');
  const user = final.filter((i) => i.op === 'USER').at(-1);
  assert.ok(user !== undefined && !/^(root|0)(:|$)/.test(user.args), 'the final stage runs as a non-root user');
  for (const op of ['ENTRYPOINT', 'CMD']) {
    const i = final.find((x) => x.op === op);
    assert.ok(i !== undefined && Array.isArray(JSON.parse(i.args)), `${op} in exec (JSON) form: signals reach node`);
  }
  const health = final.find((i) => i.op === 'HEALTHCHECK');
  assert.ok(health !== undefined, 'HEALTHCHECK');

  // the image's config: check accepts it, its ports are exposed and the healthcheck asks its admin listener
  const copy = final.find((i) => i.op === 'COPY' && /deploy\/docker\/portico\.yaml/.test(i.args));
  assert.ok(copy !== undefined, 'the image carries deploy/docker/portico.yaml');
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-deploy-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(path.join(dir, 'portico.yaml'), readFileSync(path.join(DEPLOY, 'docker', 'portico.yaml')));
  const loaded = loadConfig(path.join(dir, 'portico.yaml'));
  assert.ok(loaded.ok, loaded.ok ? '' : formatErrors('deploy/docker/portico.yaml', loaded.errors));
  const exposed = final.filter((i) => i.op === 'EXPOSE').flatMap((i) => i.args.split(/\s+/).map(Number));
  for (const l of loaded.config.listeners) assert.ok(exposed.includes(l.address.port), `EXPOSE ${l.address.port}`);
  assert.ok(health.args.includes(`127.0.0.1:${loaded.config.admin?.address.port}/status`), 'the healthcheck asks the admin listener of the image config');
});

// ---- Kubernetes ----

type Manifest = { apiVersion: string; kind: string; metadata: { name: string; labels?: Record<string, string> }; spec?: Record<string, unknown>; data?: Record<string, string> };

const KINDS: Record<string, string> = { ConfigMap: 'v1', Service: 'v1', Deployment: 'apps/v1', PodDisruptionBudget: 'policy/v1', Kustomization: 'kustomize.config.k8s.io/v1beta1' };

function manifests(): Map<string, Manifest & { file: string }> {
  const out = new Map<string, Manifest & { file: string }>();
  const files = (parse(readFileSync(path.join(DEPLOY, 'kubernetes', 'kustomization.yaml'), 'utf8')) as { resources: string[] }).resources;
  for (const f of files) {
    for (const doc of parseAllDocuments(readFileSync(path.join(DEPLOY, 'kubernetes', f), 'utf8'))) {
      assert.deepEqual(doc.errors, [], f);
      const m = doc.toJS() as Manifest;
      assert.equal(m.apiVersion, KINDS[m.kind], `${f}: ${m.kind} has apiVersion ${KINDS[m.kind]}`);
      assert.match(m.metadata?.name ?? '', /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, `${f}: metadata.name`);
      out.set(`${m.kind}/${m.metadata.name}`, { ...m, file: f });
    }
  }
  return out;
}

function matches(selector: Record<string, string>, labels: Record<string, string>): boolean {
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}

type Container = {
  ports: Array<{ name: string; containerPort: number }>;
  readinessProbe: { httpGet: { path: string; port: string } };
  livenessProbe: { httpGet: { path: string; port: string } };
  lifecycle: { preStop: { exec: { command: string[] } } };
  securityContext: { allowPrivilegeEscalation: boolean; readOnlyRootFilesystem: boolean };
  volumeMounts: Array<{ name: string; mountPath: string; readOnly?: boolean }>;
  args: string[];
};
type PodSpec = { terminationGracePeriodSeconds: number; containers: Container[]; volumes: Array<{ name: string }>; securityContext: { runAsNonRoot: boolean } };

test('Kubernetes manifests: yamllint clean, selectors and named ports agree, readiness from /status, preStop drain within the grace, PDB, SRV discovery of a headless Service', (t) => {
  if (needPeer(t, 'yamllint', hasCommand('yamllint', ['--version']))) {
    const r = spawnSync('yamllint', ['-s', '-c', path.join(DEPLOY, '.yamllint'), DEPLOY], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 0, `yamllint:\n${r.stdout}${r.stderr}`);
  }
  const all = manifests();
  const deployment = all.get('Deployment/portico');
  assert.ok(deployment !== undefined);
  const spec = deployment.spec as { replicas: number; selector: { matchLabels: Record<string, string> }; template: { metadata: { labels: Record<string, string> }; spec: PodSpec } };
  const podLabels = spec.template.metadata.labels;
  assert.ok(matches(spec.selector.matchLabels, podLabels), 'the Deployment selects its own pods');
  assert.ok(spec.replicas >= 2, 'N instances');
  const pod = spec.template.spec;
  assert.equal(pod.securityContext.runAsNonRoot, true);
  const c = pod.containers[0];
  const portNamed = (name: string) => c.ports.find((p) => p.name === name);
  assert.equal(c.readinessProbe.httpGet.path, '/status');
  assert.ok(portNamed(c.readinessProbe.httpGet.port) !== undefined && portNamed(c.livenessProbe.httpGet.port) !== undefined, 'probes use declared ports');
  assert.equal(c.securityContext.allowPrivilegeEscalation, false);
  for (const v of c.volumeMounts) assert.ok(pod.volumes.some((x) => x.name === v.name), `volume ${v.name}`);

  // the config: check accepts it (the Secret's files stand for the test certificate), its ports are the pod's
  const cm = all.get('ConfigMap/portico-config');
  assert.ok(cm?.data !== undefined);
  const text = cm.data['portico.yaml'].replaceAll('/etc/portico/tls/tls.crt', TEST_CERT).replaceAll('/etc/portico/tls/tls.key', TEST_KEY);
  const loaded = loadConfigText(text, path.join(tmpdir(), 'portico.yaml'));
  assert.ok(loaded.ok, loaded.ok ? '' : formatErrors('configmap portico.yaml', loaded.errors));
  const config = loaded.config;
  for (const l of config.listeners) assert.ok(c.ports.some((p) => p.containerPort === l.address.port), `listener port ${l.address.port} is a container port`);
  assert.equal(portNamed(c.readinessProbe.httpGet.port)?.containerPort, config.admin?.address.port, 'readiness asks the admin listener');
  assert.ok(c.volumeMounts.some((v) => v.name === 'config' && v.readOnly === true && config.listeners.length > 0), 'the ConfigMap is mounted read-only');
  assert.match(c.args.join(' '), /portico\.js start -c \/etc\/portico\/run\/portico\.yaml/);
  assert.ok(c.volumeMounts.some((v) => v.mountPath === '/etc/portico/run' && v.readOnly !== true), '.state next to the config is writable');

  // drain: preStop, then SIGTERM and shutdown_grace, all within terminationGracePeriodSeconds
  const preStop = c.lifecycle.preStop.exec.command;
  assert.equal(preStop[0], 'sleep');
  const graceMs = config.timeouts.shutdown_grace;
  assert.ok(pod.terminationGracePeriodSeconds * 1000 >= Number(preStop[1]) * 1000 + graceMs + 5000, 'preStop + shutdown_grace + 5 s fit in the grace period');

  const service = all.get('Service/portico');
  assert.ok(matches((service?.spec as { selector: Record<string, string> }).selector, podLabels), 'the Service selects the pods');
  for (const p of (service?.spec as { ports: Array<{ targetPort: string }> }).ports) assert.ok(portNamed(p.targetPort) !== undefined, `Service targetPort ${p.targetPort}`);
  const pdb = all.get('PodDisruptionBudget/portico');
  assert.ok(matches((pdb?.spec as { selector: { matchLabels: Record<string, string> } }).selector.matchLabels, podLabels), 'the PDB covers the pods');

  // backends: the SRV name of each discovered target is a headless Service's named port in these manifests
  const srv = Object.values(config.upstreams).flatMap((u) => u.discover.filter((d) => d.kind === 'srv').map((d) => d.name));
  assert.ok(srv.length > 0, 'an upstream follows SRV records');
  for (const name of srv) {
    const m = /^_([a-z0-9-]+)\._tcp\.([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local\.?$/.exec(name);
    assert.ok(m !== null, `${name} is a Service's SRV name`);
    const backend = all.get(`Service/${m[2]}`);
    assert.ok(backend !== undefined, `Service ${m[2]} is in the manifests`);
    const bspec = backend.spec as { clusterIP: string; ports: Array<{ name: string }> };
    assert.equal(bspec.clusterIP, 'None', 'headless: one SRV record per pod');
    assert.ok(bspec.ports.some((p) => p.name === m[1]), `port named ${m[1]}`);
  }
});

test('logrotate: postrotate sends SIGUSR1 to the primary, which has the workers reopen the access-log file', () => {
  const text = readFileSync(path.join(DEPLOY, 'logrotate', 'portico'), 'utf8');
  assert.match(text, /postrotate[\s\S]*SIGUSR1[\s\S]*endscript/);
  assert.doesNotMatch(text, /copytruncate/, 'no copytruncate: the file is reopened, no line is lost');
});
