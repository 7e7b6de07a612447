// Who already listens on a TCP address, read from /proc (Linux): the LISTEN sockets of /proc/net/tcp and tcp6,
// and the processes holding them through /proc/PID/fd. The primary asks before it binds a listener, because
// SO_REUSEPORT would let a second Portico share the port silently. It binds nothing; where /proc is missing
// (not Linux) it finds nothing, and the bind itself is the only check.
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { isIP } from 'node:net';

export interface ListenEntry {
  family: 4 | 6;
  /** Text form: "127.0.0.1", "0.0.0.0", "::1", "::", "::ffff:127.0.0.1". */
  address: string;
  port: number;
  inode: number;
}

export interface PortOwner {
  pid: number;
  /** Its command line, arguments joined by spaces (cut to 200 characters); "" when unreadable. */
  command: string;
}

export interface PortConflict {
  entry: ListenEntry;
  /** The processes holding the socket that this user may inspect; empty when none is readable. */
  owners: PortOwner[];
}

const TCP_LISTEN = '0A';

/** The LISTEN entries of a /proc/net/tcp (family 4) or /proc/net/tcp6 (family 6) text. Malformed lines are skipped. */
export function parseListenEntries(text: string, family: 4 | 6): ListenEntry[] {
  const out: ListenEntry[] = [];
  for (const line of text.split('\n').slice(1)) {
    // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || f[3] !== TCP_LISTEN) continue;
    const m = /^([0-9A-Fa-f]+):([0-9A-Fa-f]{4})$/.exec(f[1]);
    if (m === null || m[1].length !== (family === 4 ? 8 : 32) || !/^\d+$/.test(f[9])) continue;
    out.push({ family, address: decodeAddress(m[1], family), port: parseInt(m[2], 16), inode: Number(f[9]) });
  }
  return out;
}

/** The kernel prints each 32-bit word of the address in host order (little-endian here). */
function decodeAddress(hex: string, family: 4 | 6): string {
  const bytes: number[] = [];
  for (let w = 0; w < hex.length; w += 8) {
    const word = hex.slice(w, w + 8);
    for (let b = 6; b >= 0; b -= 2) bytes.push(parseInt(word.slice(b, b + 2), 16));
  }
  if (family === 4) return bytes.join('.');
  if (bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff) return `::ffff:${bytes.slice(12).join('.')}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] << 8) | bytes[i + 1]).toString(16));
  return expand(groups.join(':'));
}

/** Whether binding `host` would collide with a socket listening on `entry`'s address (same port assumed). */
export function overlaps(host: string, entry: ListenEntry): boolean {
  const ours = normalise(host);
  const theirs = entry.family === 4 ? entry.address : (normalise(entry.address) ?? entry.address);
  if (ours === undefined) return true; // a host name: any address of that port may be it
  if (ours === theirs) return true;
  const v4Wild = (a: string) => a === '0.0.0.0';
  const v6Wild = (a: string) => a === '::';
  if (v6Wild(ours) || v6Wild(theirs)) return true; // "::" is dual-stack unless IPV6_V6ONLY: assume it is
  if (isIP(ours) === 4) return v4Wild(theirs) || theirs === `::ffff:${ours}` || (v4Wild(ours) && (isIP(theirs) === 4 || theirs.startsWith('::ffff:')));
  return false;
}

/** "", "0.0.0.0" -> "0.0.0.0"; IPv6 in one canonical form; "localhost" -> "127.0.0.1"; a name -> undefined. */
function normalise(host: string): string | undefined {
  if (host === '' || host === '0.0.0.0') return '0.0.0.0';
  if (host === 'localhost') return '127.0.0.1';
  if (isIP(host) === 4) return host;
  if (isIP(host) !== 6) return undefined;
  const v4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(host);
  if (v4 !== null) return `::ffff:${v4[1]}`;
  return expand(host);
}

/** Full eight-group lower-case form without leading zeros, so two spellings of one address compare equal. */
function expand(v6: string): string {
  const [head, tail] = v6.toLowerCase().split('::') as [string, string | undefined];
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = groups.map((g) => parseInt(g, 16).toString(16)).join(':');
  // the two forms messages show most: the wildcard and loopback
  return out === '0:0:0:0:0:0:0:0' ? '::' : out === '0:0:0:0:0:0:0:1' ? '::1' : out;
}

function readListenEntries(): ListenEntry[] {
  const out: ListenEntry[] = [];
  for (const [file, family] of [['/proc/net/tcp', 4], ['/proc/net/tcp6', 6]] as const) {
    try {
      out.push(...parseListenEntries(readFileSync(file, 'utf8'), family));
    } catch {
      // no /proc, or no IPv6: nothing to compare against
    }
  }
  return out;
}

/** The processes whose fds (readable to this user) hold socket `inode`. */
function ownersOf(inode: number): PortOwner[] {
  const link = `socket:[${inode}]`;
  const owners: PortOwner[] = [];
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return owners;
  }
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue; // another user's process, or gone
    }
    for (const fd of fds) {
      let target: string;
      try {
        target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue;
      }
      if (target !== link) continue;
      owners.push({ pid: Number(pid), command: commandOf(Number(pid)) });
      break;
    }
  }
  return owners;
}

function commandOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((s) => s !== '').join(' ').slice(0, 200);
  } catch {
    return '';
  }
}

/** The parent pid of `pid` (from /proc/PID/stat), or undefined. */
export function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses, so read after the last ')'
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    return Number.isInteger(ppid) ? ppid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A socket another process listens on at `host:port`, or undefined. `mine(pid)` says which processes are this
 * instance's own (or part of a deliberate hand-over): a socket held only by those is no conflict.
 */
export function findListenConflict(host: string, port: number, mine: (pid: number) => boolean): PortConflict | undefined {
  if (port === 0) return undefined;
  for (const entry of readListenEntries()) {
    if (entry.port !== port || !overlaps(host, entry)) continue;
    const owners = ownersOf(entry.inode);
    if (owners.length > 0 && owners.every((o) => mine(o.pid))) continue;
    return { entry, owners: owners.filter((o) => !mine(o.pid)) };
  }
  return undefined;
}

/** One line for the operator: the port, the address it is held on, and by whom where that can be read. */
export function describeConflict(host: string, port: number, c: PortConflict): string {
  const at = c.entry.family === 6 ? `[${c.entry.address}]:${c.entry.port}` : `${c.entry.address}:${c.entry.port}`;
  const who = c.owners.length === 0 ? 'another process (not readable by this user)' : c.owners.map((o) => `pid ${o.pid}${o.command === '' ? '' : ` (${o.command})`}`).join(', ');
  return `cannot listen on ${host === '' ? '*' : host}:${port}: EADDRINUSE: port ${port} is already in use at ${at} by ${who}; stop it first (Portico does not share a port with another process)`;
}
