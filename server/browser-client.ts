/**
 * The browser client, served at GET /c1m.js as an ES module with no build
 * step: `import { connect } from 'https://push.example/c1m.js'`. It speaks
 * EventSource or WebSocket, and reconnects with full-jitter exponential
 * backoff (like centrifuge-js) instead of EventSource's fixed delay, so the
 * clients of a restarted server come back spread over time, not in one burst.
 */
export const BACKOFF_MS = { min: 500, max: 20_000 } as const;

export const BROWSER_CLIENT = String.raw`// c1m browser client. connect(id, { transport: 'sse' | 'ws', token, topics, onMessage, onState, onLost, lastEventId }); client.subscribe(topics), client.unsubscribe(topics)
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
 * one). subscribe(topics) and unsubscribe(topics) change them: on a WebSocket with one frame
 * on the open stream; on SSE by reconnecting now with the new list, resuming from the last id
 * (the replay fills the gap). Either way the list is kept for every reconnect. Each returns a
 * promise of the topics listened to once the server has them, rejected with the server's
 * reason when it refuses (a topic the token does not cover: the list goes back to what it was).
 * Returns { state, attempt, lastEventId, topics, subscribe(), unsubscribe(), close() }.
 */
export function connect(id, options = {}) {
  const transport = options.transport || 'sse';
  if (transport !== 'sse' && transport !== 'ws') throw new Error('transport must be sse or ws');
  const onMessage = options.onMessage || (() => {});
  const onState = options.onState || (() => {});
  const onLost = options.onLost || (() => {});
  const client = { state: 'closed', attempt: 0, lastEventId: options.lastEventId ?? null, topics: [...(options.topics || [])], subscribe, unsubscribe, close };
  let socket = null;
  let timer = null;
  let welcomed = false;
  /** The topics the current connection asked for when it opened; those the server last said it listens to. */
  let openedWith = client.topics;
  let accepted = null;
  /** Changes waiting for the server's answer on the open WebSocket, in order; changes a new connection's welcome settles. */
  const answers = [];
  const atWelcome = [];

  function setState(state, info = {}) {
    client.state = state;
    onState(state, info);
  }

  function url(path) {
    const u = new URL(path + encodeURIComponent(id), origin);
    if (options.token && transport === 'sse') u.searchParams.set('token', options.token);
    if (openedWith.length > 0) u.searchParams.set('topics', openedWith.join(','));
    if (client.lastEventId !== null) u.searchParams.set('lastEventId', client.lastEventId);
    if (transport === 'ws') u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    return u.href;
  }

  function open() {
    timer = null;
    welcomed = false;
    openedWith = client.topics.slice();
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
    const text = () => (typeof payload === 'string' ? payload : new TextDecoder().decode(payload));
    if (event === 'welcome') welcome(payload);
    else if (event === 'message') message(payload, field && field.startsWith('id=') ? field.slice(3) : '');
    else if (event === 'lost') lost(text());
    else if (event === 'topics' || event === 'refused') answered(event, text());
  }

  function subscribe(topics) {
    const named = [].concat(topics);
    client.topics = [...new Set([...client.topics, ...named])];
    return change('subscribe', named);
  }

  function unsubscribe(topics) {
    const named = [].concat(topics);
    client.topics = client.topics.filter((t) => !named.includes(t));
    return change('unsubscribe', named);
  }

  function change(verb, named) {
    return new Promise((resolve, reject) => {
      if (client.state === 'closed' || client.state === 'failed') return reject(new Error('the client is ' + client.state));
      if (transport === 'ws' && welcomed && socket !== null) {
        answers.push({ resolve, reject });
        socket.send(verb + ' ' + named.join(','));
        return;
      }
      // SSE, or a connection not welcomed yet: a new connection carries the list, resuming from the last id.
      // While waiting to reconnect, the next attempt will.
      atWelcome.push({ resolve, reject });
      if (socket !== null) {
        const s = socket;
        socket = null;
        s.close();
        clearTimeout(timer);
        open();
      }
    });
  }

  /** The server's answer to the oldest change on the WebSocket: the topics it listens to now, or why it changed nothing. */
  function answered(event, text) {
    const request = answers.shift();
    if (event === 'topics') {
      accepted = text === '' ? [] : text.split(',');
      if (request) request.resolve(accepted.slice());
    } else if (request) request.reject(new Error(text));
    if (answers.length === 0) client.topics = accepted.slice();
  }

  function settle(requests, error) {
    for (const request of requests.splice(0)) error ? request.reject(error) : request.resolve(accepted.slice());
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
    accepted = openedWith;
    settle(atWelcome);
    setState('connected', { welcome: text });
  }

  async function ended(which) {
    if (which !== socket) return;
    socket.close();
    socket = null;
    // The answers lost with the socket: the next connection's URL carries the list.
    atWelcome.push(...answers.splice(0));
    if (!welcomed) {
      // Neither API shows why a stream was refused; one plain request does. Retrying cannot fix these.
      const refusal = await why();
      if (socket !== null || client.state === 'closed') return;
      if (refusal && atWelcome.length > 0 && accepted !== null) {
        // A change the server refused (a topic the token does not cover): back to the topics it took, at once.
        settle(atWelcome, new Error(refusal));
        client.topics = accepted.slice();
        return open();
      }
      if (refusal) {
        settle(atWelcome, new Error(refusal));
        return setState('failed', { reason: refusal });
      }
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
      if (openedWith.length > 0) u.searchParams.set('topics', openedWith.join(','));
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
    settle(answers, new Error('closed'));
    settle(atWelcome, new Error('closed'));
    setState('closed');
  }

  open();
  return client;
}
`;
