/**
 * A subject is what a message is sent to and what a subscription names:
 * `kind:id`. A user is kind `user` and stays a plain integer everywhere (Map
 * keys, msgpack, SQLite), so `5` and `user:5` are the same subject and the
 * friends graph's paths never see a string. Any other kind (`photo:789`,
 * `group:42`) is a topic, held as its canonical string: it never reads as a
 * number, so a topic cannot collide with a user in one Map, message or column.
 */

/** A user id (a positive integer) or a topic (`kind:id`, kind other than `user`). */
export type Subject = number | string;

/** A kind: a lowercase letter, then up to 31 lowercase letters, digits, `_` or `-`. */
const KIND = '[a-z][a-z0-9_-]{0,31}';
/** An id: 1 to 64 of the characters a URL path carries as they are (letters, digits, `_ . ~ -`). */
const ID = '[A-Za-z0-9_.~-]{1,64}';
const TOPIC = new RegExp(`^(${KIND}):(${ID})$`);
const USER_ID = /^[1-9][0-9]{0,15}$/;
const DIGITS = /^[0-9]+$/;

export const SUBJECT_RULES = 'a user id, user:<id>, or kind:id (kind: a lowercase letter then up to 31 of a-z 0-9 _ -; id: 1 to 64 of A-Z a-z 0-9 _ . ~ -)';

export class SubjectError extends TypeError {}

/** User ids are positive integers that survive a round trip through a JS number. */
export function isUserId(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) > 0;
}

/**
 * The subject `value` names (a user's integer, or `kind:id` text: `user:5`,
 * `photo:789`), canonical: users as integers up to `maxUserId`, topics as
 * strings. For values (JSON, msgpack, embedding), where a user is a number;
 * text from a URL or a command line goes through parseSubject. Throws a
 * SubjectError saying what is wrong.
 */
export function toSubject(value: unknown, maxUserId = Number.MAX_SAFE_INTEGER): Subject {
  if (typeof value === 'number') return checkUser(value, maxUserId);
  if (typeof value === 'string') {
    const match = TOPIC.exec(value);
    if (match && match[1] !== 'user') return value;
    if (match) return parseUserId(match[2], maxUserId);
    if (DIGITS.test(value)) throw new SubjectError(`not a user id: ${JSON.stringify(value)} (a user id is a number; as text, user:${value})`);
  }
  throw new SubjectError(`not a subject: ${JSON.stringify(value) ?? typeof value} (expected ${SUBJECT_RULES})`);
}

/** The subject written in `text` (a URL's path, a command line): as toSubject, and a bare integer is a user (`5` ≡ `user:5`). */
export function parseSubject(text: string, maxUserId = Number.MAX_SAFE_INTEGER): Subject {
  return DIGITS.test(text) ? parseUserId(text, maxUserId) : toSubject(text, maxUserId);
}

function parseUserId(text: string, maxUserId: number): number {
  if (!USER_ID.test(text)) throw new SubjectError(`not a user id: ${JSON.stringify(text)} (expected an integer from 1 to ${maxUserId})`);
  return checkUser(Number(text), maxUserId);
}

function checkUser(id: number, maxUserId: number): number {
  if (!isUserId(id)) throw new SubjectError(`not a user id: ${JSON.stringify(id)} (expected an integer from 1 to ${maxUserId})`);
  if (id > maxUserId) throw new SubjectError(`user id ${id} is above the limit of ${maxUserId}`);
  return id;
}

/** A subject's kind: `user` for a user id. */
export function kindOf(subject: Subject): string {
  return typeof subject === 'number' ? 'user' : subject.slice(0, subject.indexOf(':'));
}

/** `user:5`, `photo:789`: the written form of any subject. */
export function formatSubject(subject: Subject): string {
  return typeof subject === 'number' ? `user:${subject}` : subject;
}
