/** The store's settings that have defaults, defined here once, apart from store.ts so that the command line can show them without loading SQLite. */

/** SQLite page cache of a store, MiB, unless told otherwise. */
export const DEFAULT_CACHE_MIB = 64;
