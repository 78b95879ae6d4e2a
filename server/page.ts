/** The page at `/`: pick a user id and watch its stream, read with fetch + ReadableStream. */
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
  <button type="submit">Connect</button>
  <span id="status">disconnected</span>
</form>
<p>Messages sent to this user, or to anyone the user is subscribed to, appear below.</p>
<pre id="log"></pre>
<script>
const log = document.getElementById('log');
const status = document.getElementById('status');
let abort = null;
// A backend can link straight to a stream: /?user=42&token=<c1m token 42>.
const params = new URLSearchParams(location.search);
if (params.get('user')) document.getElementById('user').value = params.get('user');
if (params.get('token')) document.getElementById('token').value = params.get('token');

function show(line) {
  const div = document.createElement('div');
  div.className = 'message';
  div.textContent = line;
  log.appendChild(div);
}

document.getElementById('connect').addEventListener('submit', async (event) => {
  event.preventDefault();
  if (abort) abort.abort();
  abort = new AbortController();
  log.textContent = '';
  const user = document.getElementById('user').value;
  const token = document.getElementById('token').value.trim();
  try {
    const query = token ? '?token=' + encodeURIComponent(token) : '';
    const response = await fetch('/test/' + encodeURIComponent(user) + query, { signal: abort.signal });
    if (!response.ok) {
      status.textContent = 'error ' + response.status + ': ' + (await response.text()).trim();
      return;
    }
    status.textContent = 'connected as ' + user;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffered = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += value;
      const lines = buffered.split('\\n');
      buffered = lines.pop();
      lines.filter((line) => line !== '').forEach(show); // empty lines are heartbeats
    }
    status.textContent = 'stream ended';
  } catch (err) {
    if (err.name !== 'AbortError') status.textContent = 'error: ' + err.message;
  }
});
</script>
</body>
</html>
`;
