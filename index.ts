/**
 * c1m as a library: the single-process server, its parts for those who wire
 * their own, and the backend's client.
 */
export { start, type C1m, type C1mOptions, type SharedStats, type Stats } from './server/server.js';
export { DEFAULTS } from './server/defaults.js';
export { checkSend, Router, SendError, toChunk, type SendLimits, type SubscriberSource } from './router/router.js';
export { Registry, type Connection } from './router/registry.js';
export { openStore, SqliteStore, StoreError, type SubscriptionStore } from './subsmanager/store.js';
export { toPairs, type Pair } from './subsmanager/pairs.js';
export { formatSubject, isUserId, kindOf, parseSubject, SubjectError, toSubject, SUBJECT_RULES, type Subject } from './subsmanager/subjects.js';
export { C1mClient, C1mError, C1mUnauthorized, C1mTooLarge, C1mRateLimited, C1mUnavailable, type C1mClientOptions, type SendOptions, type Sent } from './client.js';
export { mintStreamToken } from './server/auth.js';
