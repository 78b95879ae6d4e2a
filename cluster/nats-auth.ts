/**
 * Who may do what on the bus, enforced by nats-server rather than trusted to
 * the code: one NKey user per role (./nkeys.ts), each with subject
 * permissions (publish/subscribe allow lists). `writeNatsConfig` writes the
 * server's configuration and every role's credentials file into one
 * directory; processes read theirs with `--nats-creds FILE`.
 *
 *   edge <id>  publishes c1m.presence.<id> (presence, status, snapshots), c1m.replay, c1m.replay.* and one reply per request (drain answers);
 *              hears c1m.edge.<id>, c1m.admin.<id>, c1m.sync, its own inboxes
 *   router     publishes c1m.edge.* (deliver, sync), c1m.sync, c1m.send.* (a send passed to its partition's leader), c1m.routers
 *              (the partitions each leads) and replies (sent, replayed); hears c1m.presence.*, c1m.send, c1m.send.*, c1m.replay,
 *              c1m.replay.*, c1m.routers, the routers' inboxes (a leader's answers, JetStream's acks and deliveries);
 *              and owns JetStream (--replicas): its API, the brain's streams (c1m.brain.>) and KV buckets
 *   backend    publishes c1m.send, c1m.send.* (straight to a partition's leader); hears its inbox
 *   admin      publishes c1m.admin.* (drain, undrain); hears its inbox
 *
 * Replies go through nats-server's allow_responses: a process may answer the
 * requests it received, and only those. Only routers reach JetStream: an edge
 * or a backend can neither read the kept messages nor move a lease.
 *
 * With JetStream (`jetstream` option) each nats-server of a brain cluster has
 * its own configuration file, the users the same in all; the servers join each
 * other on their cluster port with a route password of their own
 * (cluster-route.secret), which the configuration then holds: it is private.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { checkServerIdentity, type PeerCertificate } from 'node:tls';
import { dirname, join } from 'node:path';
import { checkPrivateDirectory, readPrivate, writePrivate } from '../subsmanager/files.js';
import { newNKeyUser, nkeyUser, type NKeyUser } from './nkeys.js';

export type BusRole = 'router' | 'backend' | 'admin' | 'edge';

interface Permissions {
  publish: { allow: string[] };
  subscribe: { allow: string[] };
  allow_responses?: { max: number };
}

/** Replies one request may get from a process: one (an edge's snapshots go on its own subject, where routers can tell who sent them). */
const ONE_RESPONSE = { max: 1 };
const INBOXES = '_INBOX.>';

/** An edge's inboxes, its own only: the replies to its replay requests. */
export const edgeInbox = (edge: string): string => `_INBOX_EDGE.${edge}`;

/** The routers' inboxes, theirs only: a leader's answers to a passed-on send, never another process's replies. */
export const ROUTER_INBOX = '_INBOX_ROUTER';

/** Subjects of the brain's JetStream streams: what a router publishes into them (kept messages, store changes). */
export const BRAIN_SUBJECTS = 'c1m.brain';

/** What a router publishes to use JetStream: its API, acks and flow control of its consumers, its streams and KV buckets. */
const JETSTREAM = ['$JS.API.>', '$JS.ACK.>', '$JS.FC.>', '$KV.>', `${BRAIN_SUBJECTS}.>`];

export function permissions(role: BusRole, edge?: string): Permissions {
  switch (role) {
    case 'edge':
      return {
        publish: { allow: [`c1m.presence.${edge}`, 'c1m.replay', 'c1m.replay.*'] },
        subscribe: { allow: [`c1m.edge.${edge}`, `c1m.admin.${edge}`, 'c1m.sync', `${edgeInbox(edge!)}.>`] },
        allow_responses: ONE_RESPONSE,
      };
    case 'router':
      return {
        publish: { allow: ['c1m.edge.*', 'c1m.sync', 'c1m.send.*', 'c1m.routers', ...JETSTREAM] },
        subscribe: { allow: ['c1m.presence.*', 'c1m.send', 'c1m.send.*', 'c1m.replay', 'c1m.replay.*', 'c1m.routers', `${ROUTER_INBOX}.>`] },
        allow_responses: ONE_RESPONSE,
      };
    case 'backend':
      return { publish: { allow: ['c1m.send', 'c1m.send.*'] }, subscribe: { allow: [INBOXES] } };
    case 'admin':
      return { publish: { allow: ['c1m.admin.*'] }, subscribe: { allow: [INBOXES] } };
  }
}

/** The credentials file of a role in a directory written by writeNatsConfig. */
export const credsFile = (dir: string, role: BusRole, edge?: string): string => join(dir, role === 'edge' ? `edge-${edge}.creds` : `${role}.creds`);

export interface NatsConfigOptions {
  /** host:port nats-server listens on (default: as the directory's config had it, else 127.0.0.1:4222). */
  listen?: string;
  /** Edge ids to make users for; edges already in the directory keep theirs. */
  edges: string[];
  /** TLS: the server's certificate and key (PEM files), and the CA that signed the other servers' (their routes); default: as the directory's config had it. */
  tls?: { cert: string; key: string; ca?: string };
  /** JetStream on this server, for a router's --replicas: its name among the brain cluster's servers, where it keeps its streams, and the cluster. */
  jetstream?: JetStreamServer;
}

export interface JetStreamServer {
  /** Unique among the cluster's servers; the configuration goes to <name>.conf. */
  name: string;
  storeDir: string;
  /** The other servers (R ≥ 2): this one's cluster listen address and theirs, host:port. */
  cluster?: { listen: string; routes: string[] };
}

interface WrittenConfig {
  listen?: string;
  tls?: { cert_file: string; key_file: string; ca_file?: string };
}

/** The config writeNatsConfig wrote before in `file`: JSON after one comment line. */
function previousConfig(file: string): WrittenConfig {
  const previous = readPrivate(file);
  return previous ? (JSON.parse(previous.text.replace(/^#.*\n/, '')) as WrittenConfig) : {};
}

/** A role's user from its file in `dir`, made (and written) if it has none yet: rewriting the config keeps every secret. */
function userIn(dir: string, role: BusRole, edge?: string): NKeyUser {
  const file = credsFile(dir, role, edge);
  const existing = readPrivate(file);
  if (existing) return credsIn(file, existing);
  const user = newNKeyUser();
  writePrivate(file, `# c1m bus credentials: ${role}${edge ? ` ${edge}` : ''} (a NATS NKey user seed; keep it private)\n${user.seed}\n`);
  return user;
}

/**
 * Writes `dir/nats.conf` (for `nats-server -c`) and a credentials file per role and edge. Returns
 * the config's path. Written again with more edges, it keeps every user it had, its address and
 * its TLS: add an edge, then have nats-server reload (`nats-server --signal reload=<pid>` or SIGHUP).
 */
export function writeNatsConfig(dir: string, o: NatsConfigOptions): string {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  checkPrivateDirectory(dir);
  const file = join(dir, o.jetstream ? `${o.jetstream.name}.conf` : 'nats.conf');
  // Adding an edge must not silently turn TLS off or move the server.
  const before = previousConfig(file);
  const tls = o.tls ?? (before.tls && { cert: before.tls.cert_file, key: before.tls.key_file, ca: before.tls.ca_file });
  const known = readdirSync(dir).flatMap((f) => /^edge-(.+)\.creds$/.exec(f)?.[1] ?? []);
  const edges = [...new Set([...known, ...o.edges])].sort();
  const users = [
    ...(['router', 'backend', 'admin'] as const).map((role) => ({ nkey: userIn(dir, role).publicKey, permissions: permissions(role) })),
    ...edges.map((edge) => ({ nkey: userIn(dir, 'edge', edge).publicKey, permissions: permissions('edge', edge) })),
  ];
  const config = {
    listen: o.listen ?? before.listen ?? '127.0.0.1:4222',
    // A client that stops answering (a frozen router: SIGSTOP, a stalled host) is dropped within 2-3 s rather than the
    // default 4 minutes: until then it stays a member of its queue groups (a partition's sends and replays, c1m.send)
    // and the server hands it its share of them, which nobody answers.
    ping_interval: '1s',
    ping_max: 2,
    authorization: { users },
    ...(tls && { tls: { cert_file: tls.cert, key_file: tls.key, ...(tls.ca && { ca_file: tls.ca }), timeout: 2 } }),
    ...(o.jetstream && jetstreamConfig(dir, o.jetstream, tls)),
  };
  // nats-server reads JSON as its configuration format. Public keys only, and a brain cluster's route password.
  writePrivate(file, `# written by c1m (cluster/nats-auth.ts): users of the c1m bus by public NKey, with their subject permissions\n${JSON.stringify(config, null, 2)}\n`);
  return file;
}

/** The JetStream part of a server's configuration: its name and store, and its routes to the brain cluster's other servers. */
function jetstreamConfig(dir: string, js: JetStreamServer, tls: NatsConfigOptions['tls']) {
  if (!js.cluster) return { server_name: js.name, jetstream: { store_dir: js.storeDir } };
  if (tls && !tls.ca) throw new Error("a TLS brain cluster needs the CA of the servers' certificates: their routes check each other's");
  const secret = routeSecret(dir);
  return {
    server_name: js.name,
    jetstream: { store_dir: js.storeDir },
    cluster: {
      name: 'c1m-brain',
      listen: js.cluster.listen,
      authorization: { user: 'route', password: secret, timeout: 2 },
      routes: js.cluster.routes.map((route) => `nats-route://route:${secret}@${route}`),
      ...(tls && { tls: { cert_file: tls.cert, key_file: tls.key, ca_file: tls.ca, timeout: 2 } }),
    },
  };
}

/** The brain cluster's route password, made once per directory: every server's configuration written there joins the same cluster. */
function routeSecret(dir: string): string {
  const file = join(dir, 'cluster-route.secret');
  const existing = readPrivate(file)?.text.trim();
  if (existing) return existing;
  const secret = randomBytes(24).toString('base64url');
  writePrivate(file, `${secret}\n`);
  return secret;
}

/**
 * The user in a credentials file (an NKey seed); refused, as ssh refuses a private key, when others
 * may read it, or could have put it there (checkPrivateDirectory, readPrivate).
 */
export function readCreds(file: string): NKeyUser {
  checkPrivateDirectory(dirname(file));
  const read = readPrivate(file);
  if (!read) throw new Error(`credentials file ${file} does not exist`);
  return credsIn(file, read);
}

function credsIn(file: string, { text, mode }: { text: string; mode: number }): NKeyUser {
  if (mode & 0o077) throw new Error(`credentials file ${file} may be read by others (mode ${mode.toString(8)}): chmod 600 ${file}`);
  const seed = /\bSU[A-Z2-7]{56}\b/.exec(text)?.[0];
  if (!seed) throw new Error(`credentials file ${file} holds no NKey user seed (SU…)`);
  return nkeyUser(seed);
}

/**
 * A self-made certificate authority and a server certificate for `hosts` (IP addresses or names),
 * with Debian's openssl, in `dir`: ca.pem for clients (--nats-ca), server-cert.pem and server-key.pem
 * for nats-server. The CA's key is deleted once it has signed: nothing else can be signed with it.
 */
export function makeTlsFiles(dir: string, hosts: string[]): { ca: string; cert: string; key: string } {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // openssl writes its files wherever links point: only a directory nobody else writes in is safe.
  checkPrivateDirectory(dir);
  const files = { ca: join(dir, 'ca.pem'), cert: join(dir, 'server-cert.pem'), key: join(dir, 'server-key.pem') };
  const caKey = join(dir, 'ca-key.pem');
  const csr = join(dir, 'server.csr');
  const ext = join(dir, 'server.ext');
  const names = [...new Set(hosts)].map((h) => (net.isIP(h) ? `IP:${h}` : `DNS:${h}`)).join(',');
  // clientAuth too: a brain cluster's servers present it to each other on their routes, each the other's client.
  writeFileSync(ext, `subjectAltName=${names}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n`);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const steps = [
    ['req', '-x509', ...ec, '-keyout', caKey, '-out', files.ca, '-days', '3650', '-subj', '/CN=c1m bus CA'],
    ['req', ...ec, '-keyout', files.key, '-out', csr, '-subj', '/CN=c1m nats-server'],
    ['x509', '-req', '-in', csr, '-CA', files.ca, '-CAkey', caKey, '-CAcreateserial', '-out', files.cert, '-days', '825', '-extfile', ext],
  ];
  try {
    for (const args of steps) {
      const run = spawnSync('openssl', args, { encoding: 'utf8' });
      if (run.status !== 0) throw new Error(`openssl ${args[0]}: ${run.error?.message ?? run.stderr.trim()}`);
    }
    chmodSync(files.key, 0o600);
  } finally {
    for (const f of [caKey, csr, ext, join(dir, 'ca.srl')]) rmSync(f, { force: true });
  }
  return files;
}

/**
 * TLS options for @nats-io/transport-node with servers named by IP address: it upgrades its socket without naming
 * the host (no SNI for an address), so Node checks the server's certificate against "localhost" and refuses it.
 * The certificate must instead be valid for one of the servers the client was given (that it chains to the CA is
 * checked apart). Spread into its `tls` options, whose types leave out Node's checkServerIdentity.
 */
export function serverIdentity(servers: string): object {
  const hosts = servers.split(',').map((url) => new URL(url.includes('://') ? url : `nats://${url}`).hostname.replace(/^\[(.*)\]$/, '$1'));
  const check = (_host: string, cert: PeerCertificate) => (hosts.some((h) => checkServerIdentity(h, cert) === undefined) ? undefined : checkServerIdentity(hosts.join(' or '), cert));
  return { checkServerIdentity: check };
}

const isLoopback = (host: string) => host === 'localhost' || host === '::1' || host === '[::1]' || /^127\./.test(host);

/**
 * Refuses the unsafe default: a bus on a non-loopback address without credentials lets anyone
 * who reaches it deliver to every stream, drain every edge and send.
 */
export function checkBusSecurity(servers: string, creds: string | undefined, insecure: boolean | undefined): void {
  if (creds || insecure) return;
  const exposed = servers.split(',').filter((s) => !isLoopback(new URL(s.includes('://') ? s : `nats://${s}`).hostname));
  if (exposed.length)
    throw new Error(
      `NATS at ${exposed.join(', ')} is not on loopback and no --nats-creds is given: anyone who reaches it could deliver to every stream, ` +
        'drain every edge and send. Give --nats-creds FILE (c1m nats-config writes them), or --bus-insecure to run without.',
    );
}
