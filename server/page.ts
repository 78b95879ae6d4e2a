/** The page at `/`: pick a user id and a transport and watch the stream, through the browser client at /c1m.js. */
export const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>c1m</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; max-width: 48rem; margin: 2rem auto; padding: 0 1rem; }
  #log { background: #111; color: #9f9; padding: 1rem; min-height: 12rem; white-space: pre-wrap; }
</style>
</head>
<body>
<h1>c1m</h1>
<form id="connect">
  <label>User id <input id="user" name="user" type="number" min="1" value="1" required></label>
  <label>Token <input id="token" name="token" placeholder="if the server has --stream-secret"></label>
  <label>Transport <select id="transport"><option value="sse">EventSource</option><option value="ws">WebSocket</option></select></label>
  <button type="submit">Connect</button>
  <span id="status">disconnected</span>
</form>
<p>Messages sent to this user, or to anyone the user is subscribed to, appear below.</p>
<pre id="log"></pre>
<script type="module">
import { connect } from '/c1m.js';
const log = document.getElementById('log');
const status = document.getElementById('status');
let client = null;
// A backend can link straight to a stream: /?user=42&token=<c1m token 42>&transport=ws.
const params = new URLSearchParams(location.search);
for (const name of ['user', 'token', 'transport']) if (params.get(name)) document.getElementById(name).value = params.get(name);

function show(line) {
  const div = document.createElement('div');
  div.className = 'message';
  div.textContent = line;
  log.appendChild(div);
}

document.getElementById('connect').addEventListener('submit', (event) => {
  event.preventDefault();
  if (client) client.close();
  log.textContent = '';
  const user = document.getElementById('user').value;
  client = connect(user, {
    transport: document.getElementById('transport').value,
    token: document.getElementById('token').value.trim(),
    onMessage: (data) => show(typeof data === 'string' ? data : new TextDecoder().decode(data)),
    onState(state, info) {
      if (state === 'connected') {
        status.textContent = 'connected as ' + user;
        show(info.welcome);
      } else if (state === 'disconnected') status.textContent = 'reconnecting in ' + Math.round(info.delay) + ' ms';
      else if (state === 'failed') status.textContent = info.reason;
      else status.textContent = state;
    },
  });
  window.c1mClient = client; // for tests and the console
});
</script>
</body>
</html>
`;
