/** The `code` an error carries, whoever threw it: Node's system errors (`ENOENT`), better-sqlite3's (`SQLITE_BUSY`), NATS's (numbers); undefined for one without. */
export const errorCode = (err: unknown): unknown => (typeof err === 'object' && err !== null && 'code' in err ? err.code : undefined);
