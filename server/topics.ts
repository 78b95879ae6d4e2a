/**
 * Topics a stream listens to while it is open (not stored, gone with the
 * stream): named when it opens (`?topics=photo:789,match:7` on every
 * transport) and, on a WebSocket, changed while it is open by the client's
 * frames `subscribe photo:1,match:7` and `unsubscribe photo:789`. Both ways
 * take the same rules, the same cap and the same token scope.
 */
import { toSubject } from '../subsmanager/subjects.js';
import { uncovered } from './auth.js';

/** Topics one stream may listen to: its registry entries and the history's replay grow with them. */
const MAX_TOPICS_PER_STREAM = 16;

/** The topics of a comma-separated list (`photo:789,match:7`), each once, or why they are refused; `where` names the list in the refusal. */
export function parseTopics(text: string, where = '?topics='): string[] | { refused: string } {
  if (text === '') return [];
  const topics = new Set<string>();
  for (const entry of text.split(',')) {
    let subject;
    try {
      subject = toSubject(entry);
    } catch (err) {
      return { refused: `bad topic in ${where}: ${(err as Error).message}` };
    }
    if (typeof subject !== 'string') return { refused: `${where} lists topics, not users: ${entry} (a stream hears its user's friends through subscriptions)` };
    topics.add(subject);
  }
  return capped(topics.size) ?? [...topics];
}

const capped = (count: number): { refused: string } | null =>
  count > MAX_TOPICS_PER_STREAM ? { refused: `a stream listens to at most ${MAX_TOPICS_PER_STREAM} topics, not ${count}` } : null;

/** A client frame that changes a stream's topics: the command, a space, a list as in ?topics=. */
const COMMAND = /^(subscribe|unsubscribe) ([^\n]*)$/;

/**
 * The topics a stream listens to after the client frame `text`: `subscribe <topics>` adds (each must be covered by
 * `scope`, its token's, when the server asks for tokens), `unsubscribe <topics>` drops. Why the frame changes
 * nothing when it is refused; null when it is not such a frame.
 */
export function changeTopics(current: readonly string[], text: string, scope: readonly string[] | undefined): string[] | { refused: string } | null {
  const command = COMMAND.exec(text);
  if (command === null) return null;
  const [, verb, list] = command;
  const named = parseTopics(list, verb);
  if (!Array.isArray(named)) return named;
  if (verb === 'unsubscribe') return current.filter((topic) => !named.includes(topic));
  const why = scope && uncovered(scope, named);
  if (why) return { refused: why };
  const next = [...new Set([...current, ...named])];
  return capped(next.length) ?? next;
}
