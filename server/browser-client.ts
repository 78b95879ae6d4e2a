/**
 * The browser client, served at GET /c1m.js as an ES module with no build
 * step: `import { connect } from 'https://push.example/c1m.js'`. It speaks
 * EventSource or WebSocket, and reconnects with full-jitter exponential
 * backoff (like centrifuge-js) instead of EventSource's fixed delay, so the
 * clients of a restarted server come back spread over time, not in one burst.
 */
export const BACKOFF_MS = { min: 500, max: 20_000 } as const;

export const BROWSER_CLIENT = String.raw`// c1m browser client. connect(id, { transport: 'sse' | 'ws', token, topics, onMessage, onState, onLost, lastEventId })
export const BACKOFF_MS = { min: ${BACKOFF_MS.min}, max: ${BACKOFF_MS.max} };

/** The longest wait before reconnect attempt number attempt (0, 1, ...): min * 2^attempt, at most max. */
export function backoffBound(attempt) {
  return Math.min(BACKOFF_MS.max, BACKOFF_MS.min * 2 ** attempt);
}

const origin = new URL('/', import.meta.url);

/**
 * Opens user id's stream and keeps it open. onMessage(data, { event, id }) gets each
 * message (a string; a Uint8Array for a binary WebSocket message) with its id where the
 * server keeps a history (a number; a cluster of several partitions gives a token string, its ids joined by '-'). onState(state, info) hears every change: 'connecting',
 * 'connected', 'disconnected' (info.delay: ms until the next attempt), 'failed'
 * (info.reason: refused for good, e.g. a bad token), 'closed'. Each reconnect resumes
 * from the last id seen (or options.lastEventId, e.g. kept across page loads): the
 * server replays what was missed, or calls onLost(why) when it cannot ('expired':
 * away longer than its history; 'unknown': an id it never gave), and the page
 * should then refetch its state. options.topics (['photo:789', ...]) are topics the stream
 * also listens to while it is open (the token must cover them where the server asks for
 * one); to change them, close and connect again with the last id: the replay fills the gap.
 * Returns { state, attempt, lastEventId, close() }.
 */
export function connect(id, options = {}) {
  const transport = options.transport || 'sse';
  if (transport !== 'sse' && transport !== 'ws') throw new Error('transport must be sse or ws');
  const onMessage = options.onMessage || (() => {});
  const onState = options.onState || (() => {});
  const onLost = options.onLost || (() => {});
  const client = { state: 'closed', attempt: 0, lastEventId: options.lastEventId ?? null, close };
  let socket = null;
  let timer = null;
  let welcomed = false;

  function setState(state, info = {}) {
    client.state = state;
    onState(state, info);
  }

  function url(path) {
    const u = new URL(path + encodeURIComponent(id), origin);
    if (options.token && transport === 'sse') u.searchParams.set('token', options.token);
    if (options.topics && options.topics.length > 0) u.searchParams.set('topics', options.topics.join(','));
    if (client.lastEventId !== null) u.searchParams.set('lastEventId', client.lastEventId);
    if (transport === 'ws') u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    return u.href;
  }

  function open() {
    timer = null;
    welcomed = false;
    setState('connecting', { attempt: client.attempt });
    if (transport === 'sse') {
      const source = new EventSource(url('/sse/'));
      socket = source;
      source.addEventListener('welcome', (e) => welcome(e.data));
      source.onmessage = (e) => message(e.data, e.lastEventId);
      source.addEventListener('lost', (e) => lost(e.data));
      // EventSource would retry on its own at a fixed delay: closed here, retried with jitter.
      source.onerror = () => ended(source);
    } else {
      // The token travels as a subprotocol, not in the URL that proxies log.
      const ws = new WebSocket(url('/ws/'), options.token ? ['c1m', 'token.' + options.token] : []);
      socket = ws;
      ws.binaryType = 'arraybuffer';
      ws.onmessage = (e) => frame(e.data);
      ws.onclose = () => ended(ws);
    }
  }

  /** A WebSocket frame: a header line (the event, later its fields), then the payload. */
  function frame(data) {
    let header, payload;
    if (typeof data === 'string') {
      const nl = data.indexOf('\n');
      header = data.slice(0, nl);
      payload = data.slice(nl + 1);
    } else {
      const bytes = new Uint8Array(data);
      const nl = bytes.indexOf(10);
      header = new TextDecoder().decode(bytes.subarray(0, nl));
      payload = bytes.subarray(nl + 1);
    }
    const [event, field] = header.split(' ');
    if (event === 'welcome') welcome(payload);
    else if (event === 'message') message(payload, field && field.startsWith('id=') ? field.slice(3) : '');
    else if (event === 'lost') lost(typeof payload === 'string' ? payload : new TextDecoder().decode(payload));
  }

  function message(data, id) {
    if (id) client.lastEventId = id;
    onMessage(data, { event: 'message', id: id ? (/^\d+$/.test(id) ? Number(id) : id) : undefined });
  }

  /** The server cannot replay what was missed: from here on the stream is live only. */
  function lost(why) {
    client.lastEventId = null;
    onLost(why);
  }

  function welcome(text) {
    welcomed = true;
    client.attempt = 0;
    setState('connected', { welcome: text });
  }

  async function ended(which) {
    if (which !== socket) return;
    socket.close();
    socket = null;
    if (!welcomed) {
      // Neither API shows why a stream was refused; one plain request does. Retrying cannot fix these.
      const refusal = await why();
      if (socket !== null || client.state === 'closed') return;
      if (refusal) return setState('failed', { reason: refusal });
    }
    const delay = Math.random() * backoffBound(client.attempt);
    client.attempt++;
    setState('disconnected', { delay, attempt: client.attempt });
    timer = setTimeout(open, delay);
  }

  /** 'error <status>: <text>' when the server refuses this stream for good (401, 403, 404), else null. */
  async function why() {
    const abort = new AbortController();
    try {
      const u = new URL('/sse/' + encodeURIComponent(id), origin);
      if (options.token) u.searchParams.set('token', options.token);
      const res = await fetch(u, { signal: abort.signal });
      if (res.status === 401 || res.status === 403 || res.status === 404) return 'error ' + res.status + ': ' + (await res.text()).trim();
    } catch {}
    finally {
      abort.abort();
    }
    return null;
  }

  function close() {
    clearTimeout(timer);
    const s = socket;
    socket = null;
    if (s) s.close();
    setState('closed');
  }

  open();
  return client;
}
`;
