// What Portico takes from an ACME CA before writing it (checkIssued in src/primary/acme.ts): a PEM certificate for
// the order's own key, valid now, naming every domain. Certificates made here for the purpose (selfsigned).
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import test from 'node:test';
import { checkIssued } from '../../src/primary/acme.js';
import { selfSigned } from '../helpers/certs.js';

const DAY = 86_400_000;

test('checkIssued: takes a certificate for the key, valid now, naming the domains; refuses each lie with its reason', async () => {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256', privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } });
  const keyPair = { privateKey, publicKey };
  const now = Date.now();
  const good = await selfSigned('a.example.test', { server: ['a.example.test', 'b.example.test'] }, { keyPair });
  const held = checkIssued(good.cert, privateKey, ['a.example.test', 'b.example.test'], now);
  assert.deepEqual(held.names, ['a.example.test', 'b.example.test']);

  assert.throws(() => checkIssued('<html>rate limited</html>', privateKey, ['a.example.test'], now), /not a PEM certificate/);
  const otherKey = await selfSigned('a.example.test', { server: ['a.example.test'] });
  assert.throws(() => checkIssued(otherKey.cert, privateKey, ['a.example.test'], now), /not for the key of this order/);
  const expired = await selfSigned('a.example.test', { server: ['a.example.test'] }, { keyPair, notBefore: new Date(now - 10 * DAY), notAfter: new Date(now - DAY) });
  assert.throws(() => checkIssued(expired.cert, privateKey, ['a.example.test'], now), /expired/);
  const future = await selfSigned('a.example.test', { server: ['a.example.test'] }, { keyPair, notBefore: new Date(now + 2 * DAY), notAfter: new Date(now + 10 * DAY) });
  assert.throws(() => checkIssued(future.cert, privateKey, ['a.example.test'], now), /not valid before/);
  const soonish = await selfSigned('a.example.test', { server: ['a.example.test'] }, { keyPair, notBefore: new Date(now + 10 * 60_000), notAfter: new Date(now + 10 * DAY) });
  assert.doesNotThrow(() => checkIssued(soonish.cert, privateKey, ['a.example.test'], now), 'a start minutes ahead is clock skew, taken');
  assert.throws(() => checkIssued(good.cert, privateKey, ['a.example.test', 'c.example.test'], now), /does not name a\.example\.test, c\.example\.test/);
});
